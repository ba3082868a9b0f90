//! Ollama REST API client, held to the shapes in `reference/engine-api-facts.md` §1.
//!
//! - Streaming endpoints (`/api/pull`, `/api/chat`) answer NDJSON. An error after the stream
//!   started arrives as one more `{"error": "..."}` line inside an HTTP 200 answer; it becomes
//!   [`EngineError::InStream`] with the engine's exact text. An error before the stream is a
//!   non-2xx status with `{"error": "..."}`; it becomes [`EngineError::Http`].
//! - Durations are nanoseconds. The final chunk's counters are `omitempty`, so an absent
//!   counter means zero.
//! - Error texts are kept verbatim; classifying them is the Debug agent's job.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::engine::{self, EngineError, GenRequest, Generation, LineSplitter};

/// Default limit for one metadata call (`/api/version`, `/api/tags`, `/api/ps`, `/api/show`).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest silence tolerated in a pull stream (Ollama reports progress every ~60 ms).
pub const DEFAULT_PULL_STALL: Duration = Duration::from_secs(300);
/// Most bytes of an error body read back.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Most characters of a bad line quoted in a [`EngineError::Protocol`] message.
const MAX_QUOTED_LINE: usize = 200;
/// Request keys that Ollama reads at the top level of `/api/chat`, not inside `options`.
const TOP_LEVEL_KEYS: [&str; 3] = ["keep_alive", "think", "format"];

/// A client for one Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base: String,
    http: reqwest::Client,
    call_timeout: Duration,
    pull_stall: Duration,
    keep_alive: Option<Value>,
}

/// One progress line of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PullProgress {
    /// `pulling manifest`, `pulling <12 hex>`, `verifying sha256 digest`, `writing manifest`, `success`, …
    pub status: String,
    /// The layer's digest (`sha256:…`), on layer lines.
    #[serde(default)]
    pub digest: Option<String>,
    /// The layer's size in bytes; missing when zero or unknown.
    #[serde(default)]
    pub total: Option<u64>,
    /// Bytes of the layer downloaded so far; missing when zero.
    #[serde(default)]
    pub completed: Option<u64>,
}

/// What a finished pull reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullOutcome {
    /// Layer digests seen, in first-seen order.
    pub digests: Vec<String>,
    /// Sum of the layers' `total` sizes, bytes.
    pub total_bytes: u64,
    /// Progress lines received (including `success`).
    pub lines: usize,
    /// Request sent → `success`.
    pub elapsed: Duration,
}

/// `details` of a model as `/api/tags`, `/api/ps` and `/api/show` give them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct ModelDetails {
    /// Parent model, usually empty.
    pub parent_model: Option<String>,
    /// File format, e.g. `gguf`.
    pub format: Option<String>,
    /// Family, e.g. `llama`.
    pub family: Option<String>,
    /// All families.
    pub families: Option<Vec<String>>,
    /// Parameter size, e.g. `33B`, `7.2B`.
    pub parameter_size: Option<String>,
    /// Quantisation, e.g. `Q4_0`, `Q4_K_M`.
    pub quantization_level: Option<String>,
    /// Training context, when the server gives it here.
    pub context_length: Option<u64>,
    /// Embedding length, when the server gives it here.
    pub embedding_length: Option<u64>,
}

/// One installed model from `/api/tags`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct TagModel {
    /// Name, e.g. `deepseek-coder:33b`.
    pub name: String,
    /// Model name (same as `name` in current versions).
    pub model: String,
    /// Last modification time as the server wrote it.
    pub modified_at: Option<String>,
    /// Download size, bytes.
    pub size: u64,
    /// Manifest digest.
    pub digest: String,
    /// Format, family, size and quantisation.
    pub details: ModelDetails,
}

/// What `/api/show` says about a model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShowInfo {
    /// Parameter size, e.g. `33B`.
    pub parameter_size: Option<String>,
    /// Quantisation, e.g. `Q4_0`.
    pub quantization_level: Option<String>,
    /// Family, e.g. `llama`.
    pub family: Option<String>,
    /// File format, e.g. `gguf`.
    pub format: Option<String>,
    /// Training context length (`details.context_length` or `<arch>.context_length`).
    pub context_length: Option<u64>,
    /// GGUF key/value metadata (`general.architecture`, `<arch>.block_count`, …).
    pub model_info: Map<String, Value>,
    /// Capabilities, e.g. `completion`, `tools`, `vision`.
    pub capabilities: Vec<String>,
    /// The Modelfile's `parameters` text (e.g. `num_ctx 16384`), if any.
    pub parameters: Option<String>,
}

impl ShowInfo {
    /// `general.architecture`, e.g. `llama`.
    pub fn architecture(&self) -> Option<&str> {
        self.model_info.get("general.architecture").and_then(Value::as_str)
    }

    /// A numeric `<arch>.<key>` value, e.g. `arch_u64("block_count")`.
    pub fn arch_u64(&self, key: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.model_info.get(&format!("{arch}.{key}")).and_then(as_u64)
    }

    /// `general.parameter_count`.
    pub fn parameter_count(&self) -> Option<u64> {
        self.model_info.get("general.parameter_count").and_then(as_u64)
    }

    /// f16 KV-cache bytes per token of context:
    /// `Σ_layers head_count_kv × (key_length + value_length) × 2`, where the head dims default
    /// to `embedding_length / head_count` and a per-layer `head_count_kv` array is summed.
    pub fn kv_bytes_per_token_f16(&self) -> Option<u64> {
        let arch = self.architecture()?;
        let layers = self.arch_u64("block_count")?;
        let heads = self.arch_u64("attention.head_count").filter(|h| *h > 0);
        let embedding = self.arch_u64("embedding_length");
        let default_dim = match (embedding, heads) {
            (Some(e), Some(h)) => Some(e / h),
            _ => None,
        };
        let key_dim = self.arch_u64("attention.key_length").or(default_dim)?;
        let value_dim = self.arch_u64("attention.value_length").or(default_dim)?;
        let kv_heads_total = match self.model_info.get(&format!("{arch}.attention.head_count_kv")) {
            Some(Value::Array(per_layer)) => {
                let counts: Option<Vec<u64>> = per_layer.iter().map(as_u64).collect();
                let counts = counts?;
                if counts.len() as u64 == layers {
                    counts.iter().sum()
                } else {
                    counts.iter().copied().min()?.checked_mul(layers)?
                }
            }
            Some(v) => as_u64(v)?.checked_mul(layers)?,
            // No GQA key: as many KV heads as query heads.
            None => heads?.checked_mul(layers)?,
        };
        kv_heads_total.checked_mul(key_dim + value_dim)?.checked_mul(2)
    }
}

/// One model loaded in memory, from `/api/ps`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct PsModel {
    /// Name, e.g. `mistral:latest`.
    pub name: String,
    /// Model name.
    pub model: String,
    /// Bytes the loaded model uses (weights + KV + graph).
    pub size: u64,
    /// The part of `size` on the GPU, bytes.
    pub size_vram: u64,
    /// Manifest digest.
    pub digest: String,
    /// Effective `num_ctx` of the runner (Ollama ≥ 0.9.7).
    pub context_length: Option<u64>,
    /// When it will be unloaded, as the server wrote it (RFC 3339).
    pub expires_at: Option<String>,
    /// Format, family, size and quantisation.
    pub details: ModelDetails,
}

impl PsModel {
    /// `size_vram / size`: 1.0 = all on the GPU, 0.0 = all on the CPU (0.0 when `size` is 0).
    pub fn gpu_fraction(&self) -> f64 {
        if self.size == 0 { 0.0 } else { (self.size_vram as f64 / self.size as f64).min(1.0) }
    }

    /// The `PROCESSOR` column of `ollama ps`: `100% GPU`, `100% CPU` or `48%/52% CPU/GPU`.
    pub fn processor(&self) -> String {
        if self.size_vram == 0 {
            "100% CPU".to_string()
        } else if self.size_vram == self.size {
            "100% GPU".to_string()
        } else if self.size_vram > self.size || self.size == 0 {
            "Unknown".to_string()
        } else {
            let cpu = ((self.size - self.size_vram) as f64 / self.size as f64 * 100.0).round() as u64;
            format!("{cpu}%/{}% CPU/GPU", 100 - cpu)
        }
    }

    /// `expires_at` parsed, if it is valid RFC 3339.
    pub fn expires_at_time(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(self.expires_at.as_deref()?).ok()
    }
}

#[derive(Deserialize)]
struct VersionBody {
    version: Option<String>,
}

#[derive(Deserialize)]
struct ModelsBody<T> {
    #[serde(default = "Vec::new")]
    models: Vec<T>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ShowBody {
    details: ModelDetails,
    model_info: Option<Map<String, Value>>,
    capabilities: Option<Vec<String>>,
    parameters: Option<String>,
}

#[derive(Deserialize)]
struct PullLine {
    status: Option<String>,
    digest: Option<String>,
    total: Option<u64>,
    completed: Option<u64>,
    error: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatMessage {
    content: Option<String>,
    thinking: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChatChunk {
    message: Option<ChatMessage>,
    /// `/api/generate` puts the text here.
    response: Option<String>,
    done: bool,
    done_reason: Option<String>,
    load_duration: Option<u64>,
    prompt_eval_count: Option<u64>,
    prompt_eval_duration: Option<u64>,
    eval_count: Option<u64>,
    eval_duration: Option<u64>,
    error: Option<Value>,
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
            keep_alive: None,
        }
    }

    /// Sets the limit for one metadata call.
    pub fn with_call_timeout(mut self, timeout: Duration) -> OllamaClient {
        self.call_timeout = timeout;
        self
    }

    /// Sets the longest silence tolerated in a pull stream.
    pub fn with_pull_stall(mut self, stall: Duration) -> OllamaClient {
        self.pull_stall = stall;
        self
    }

    /// Sets the `keep_alive` sent with each generation (seconds as a number, or `"10m"`).
    pub fn with_keep_alive(mut self, keep_alive: Value) -> OllamaClient {
        self.keep_alive = Some(keep_alive);
        self
    }

    /// The base URL (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
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
        loop {
            let next = tokio::time::timeout(self.pull_stall, lines.next_line())
                .await
                .map_err(|_| EngineError::Timeout(self.pull_stall))??;
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

    /// Streams one chat generation (`POST /api/chat`) and times it.
    ///
    /// Messages are `system` (when set) then the prompt. `options` carries `seed`,
    /// `temperature`, `num_predict` = `max_tokens`, `num_ctx` = `context` (when set), then the
    /// entries of `req.options`, which override; `keep_alive`, `think` and `format` found in
    /// `req.options` go to the top level instead. Chunk times count from the request's start;
    /// TTFT is the first chunk with non-empty `content` or `thinking` (both are generated
    /// tokens), or the end-to-end time when none came. Engine rates come from the final
    /// chunk; counters it leaves out are zero.
    pub async fn generate_stream(&self, req: &GenRequest) -> Result<Generation, EngineError> {
        let start = Instant::now();
        match tokio::time::timeout(req.timeout, self.chat_inner(req, start)).await {
            Ok(result) => result,
            Err(_) => Err(EngineError::Timeout(req.timeout)),
        }
    }

    fn chat_body(&self, req: &GenRequest) -> Value {
        let mut messages = Vec::new();
        if let Some(system) = &req.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        let mut body = Map::new();
        body.insert("model".into(), json!(req.model));
        body.insert("messages".into(), Value::Array(messages));
        body.insert("stream".into(), Value::Bool(true));
        if let Some(keep_alive) = &self.keep_alive {
            body.insert("keep_alive".into(), keep_alive.clone());
        }
        for (key, value) in &req.options {
            if TOP_LEVEL_KEYS.contains(&key.as_str()) {
                body.insert(key.clone(), value.clone());
            }
        }
        body.insert("options".into(), Value::Object(request_options(req).into_iter().collect()));
        Value::Object(body)
    }

    async fn chat_inner(&self, req: &GenRequest, start: Instant) -> Result<Generation, EngineError> {
        let http_req = self.http.post(self.url("/api/chat")).json(&self.chat_body(req));
        let resp = check_status(self.send(http_req, req.timeout).await?).await?;
        let mut lines = NdjsonLines::new(resp);
        let mut generation = Generation::default();
        let mut first: Option<Duration> = None;
        loop {
            let next = match (req.stall, first) {
                (Some(limit), Some(_)) => tokio::time::timeout(limit, lines.next_line())
                    .await
                    .map_err(|_| EngineError::Stalled { after: limit, chunks: generation.chunk_times.len() })?,
                _ => lines.next_line().await,
            };
            let Some((line, at)) = next? else {
                return Err(EngineError::Protocol(format!(
                    "the /api/chat stream ended before the final chunk (done: true) after {} content chunks",
                    generation.chunk_times.len()
                )));
            };
            let chunk: ChatChunk = serde_json::from_str(&line).map_err(|e| bad_line("/api/chat", &line, &e))?;
            if let Some(err) = chunk.error {
                return Err(EngineError::InStream { message: error_text(&err) });
            }
            let since = at.saturating_duration_since(start);
            let (content, thinking) = match &chunk.message {
                Some(m) => (m.content.as_deref().unwrap_or(""), m.thinking.as_deref().unwrap_or("")),
                None => (chunk.response.as_deref().unwrap_or(""), ""),
            };
            if !content.is_empty() || !thinking.is_empty() {
                generation.chunk_times.push(since);
                first.get_or_insert(since);
            }
            if !content.is_empty() && !generation.truncated && engine::append_capped(&mut generation.text, content) {
                generation.truncated = true;
            }
            if chunk.done {
                generation.e2e = since;
                generation.ttft = first.unwrap_or(since);
                fill_counters(&mut generation, &chunk);
                return Ok(generation);
            }
        }
    }

    /// Unloads `tag` now (`POST /api/generate` with an empty prompt and `keep_alive: 0`).
    pub async fn unload(&self, tag: &str) -> Result<(), EngineError> {
        let req = self
            .http
            .post(self.url("/api/generate"))
            .json(&json!({"model": tag, "keep_alive": 0, "stream": false}))
            .timeout(self.call_timeout);
        let resp = check_status(self.send(req, self.call_timeout).await?).await?;
        let body: ChatChunk = decode_json(resp, "/api/generate").await?;
        match body.error {
            Some(err) => Err(EngineError::InStream { message: error_text(&err) }),
            None => Ok(()),
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        let req = self.http.get(self.url(path)).timeout(self.call_timeout);
        let resp = check_status(self.send(req, self.call_timeout).await?).await?;
        decode_json(resp, path).await
    }

    async fn send(&self, req: reqwest::RequestBuilder, limit: Duration) -> Result<reqwest::Response, EngineError> {
        req.send().await.map_err(|e| {
            if e.is_timeout() {
                EngineError::Timeout(limit)
            } else {
                EngineError::Unreachable { url: self.base.clone(), reason: error_chain(&e) }
            }
        })
    }
}

/// The `options` object a generation request carries, exactly as [`OllamaClient::generate_stream`]
/// sends it: `seed`, `temperature`, `num_predict` = `max_tokens`, `num_ctx` = `context` (when
/// set), then `req.options` (which override), less the keys Ollama reads at the top level.
pub fn request_options(req: &GenRequest) -> BTreeMap<String, Value> {
    let mut options = BTreeMap::new();
    options.insert("seed".into(), json!(req.seed));
    options.insert("temperature".into(), json!(req.temperature));
    options.insert("num_predict".into(), json!(req.max_tokens));
    if let Some(ctx) = req.context {
        options.insert("num_ctx".into(), json!(ctx));
    }
    for (key, value) in &req.options {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            options.insert(key.clone(), value.clone());
        }
    }
    options
}

fn fill_counters(generation: &mut Generation, chunk: &ChatChunk) {
    let eval_count = chunk.eval_count.unwrap_or(0);
    let eval_ns = chunk.eval_duration.unwrap_or(0);
    let prompt_count = chunk.prompt_eval_count.unwrap_or(0);
    let prompt_ns = chunk.prompt_eval_duration.unwrap_or(0);
    generation.output_tokens = Some(u32::try_from(eval_count).unwrap_or(u32::MAX));
    generation.prompt_tokens = Some(u32::try_from(prompt_count).unwrap_or(u32::MAX));
    generation.engine_decode_tps = rate(eval_count, eval_ns);
    generation.engine_prefill_tps = rate(prompt_count, prompt_ns);
    generation.engine_prompt_ms = Some(prompt_ns as f64 / 1e6);
    generation.engine_load_ms = Some(chunk.load_duration.unwrap_or(0) as f64 / 1e6);
    generation.finish_reason = chunk.done_reason.clone();
}

/// Tokens per second from a count and nanoseconds; None when either is zero.
fn rate(count: u64, nanos: u64) -> Option<f64> {
    (count > 0 && nanos > 0).then(|| count as f64 / nanos as f64 * 1e9)
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
}

/// `name` → `name:latest` when it has no tag.
fn normalize_tag(tag: &str) -> String {
    let last = tag.rsplit('/').next().unwrap_or(tag);
    if last.contains(':') { tag.to_string() } else { format!("{tag}:latest") }
}

/// The text of an `error` value: a string as is, anything else as JSON.
fn error_text(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn quote(line: &str) -> String {
    if line.chars().count() <= MAX_QUOTED_LINE {
        line.to_string()
    } else {
        let cut: String = line.chars().take(MAX_QUOTED_LINE).collect();
        format!("{cut}… ({} bytes)", line.len())
    }
}

fn bad_line(endpoint: &str, line: &str, err: &serde_json::Error) -> EngineError {
    EngineError::Protocol(format!("unparseable line from {endpoint} ({err}): {}", quote(line)))
}

fn error_chain(err: &dyn std::error::Error) -> String {
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
async fn check_status(resp: reqwest::Response) -> Result<reqwest::Response, EngineError> {
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

async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<String, EngineError> {
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

async fn decode_json<T: serde::de::DeserializeOwned>(
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
struct NdjsonLines {
    body: ByteStream,
    splitter: LineSplitter,
    pending: VecDeque<(String, Instant)>,
    ended: bool,
}

impl NdjsonLines {
    fn new(resp: reqwest::Response) -> NdjsonLines {
        NdjsonLines {
            body: Box::pin(resp.bytes_stream()),
            splitter: LineSplitter::default(),
            pending: VecDeque::new(),
            ended: false,
        }
    }

    async fn next_line(&mut self) -> Result<Option<(String, Instant)>, EngineError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use testkit::fake_http::{FakeServer, Route, TokenStream};

    const MS: Duration = Duration::from_millis(1);

    fn req(timeout: Duration) -> GenRequest {
        GenRequest {
            model: "llama3.2".into(),
            system: Some("Be brief.".into()),
            prompt: "Say hello.".into(),
            max_tokens: 64,
            temperature: 0.0,
            seed: 42,
            context: Some(4096),
            options: BTreeMap::new(),
            timeout,
            stall: None,
        }
    }

    fn chat_line(content: &str) -> Value {
        json!({"model": "llama3.2", "created_at": "2025-10-17T23:14:07.4Z",
            "message": {"role": "assistant", "content": content}, "done": false})
    }

    /// The final chunk example of §1.4, verbatim.
    const FINAL_EXAMPLE: &str = r#"{"model":"gemma4","created_at":"2025-10-17T23:14:07.414671Z","response":"Hello! How can I help you today?","done":true,"done_reason":"stop","total_duration":174560334,"load_duration":101397084,"prompt_eval_count":11,"prompt_eval_duration":13074791,"eval_count":18,"eval_duration":52479709}"#;

    async fn server(routes: Vec<Route>) -> (FakeServer, OllamaClient) {
        let server = FakeServer::start(routes).await.unwrap();
        let client = OllamaClient::new(&server.url());
        (server, client)
    }

    #[tokio::test]
    async fn pull_reports_progress_with_and_without_sizes() {
        let digest = "sha256:6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa";
        let lines = vec![
            (MS, json!({"status": "pulling manifest"})),
            (MS, json!({"status": "pulling 6a0746a1ec1a", "digest": digest, "total": 2142590208u64})),
            (
                MS,
                json!({"status": "pulling 6a0746a1ec1a", "digest": digest, "total": 2142590208u64, "completed": 241970}),
            ),
            (
                MS,
                json!({"status": "pulling 6a0746a1ec1a", "digest": digest, "total": 2142590208u64, "completed": 2142590208u64}),
            ),
            (MS, json!({"status": "verifying sha256 digest"})),
            (MS, json!({"status": "writing manifest"})),
            (MS, json!({"status": "removing unused layers"})),
            (MS, json!({"status": "success"})),
        ];
        let (server, client) = server(vec![Route::ndjson("POST", "/api/pull", lines)]).await;
        let mut seen = Vec::new();
        let outcome = client.pull("llama3.2:1b", |p| seen.push(p)).await.unwrap();
        assert_eq!(seen.len(), 8);
        assert_eq!(
            seen[0],
            PullProgress { status: "pulling manifest".into(), digest: None, total: None, completed: None }
        );
        assert_eq!(seen[1].total, Some(2142590208));
        assert_eq!(seen[1].completed, None, "completed is omitted when zero");
        assert_eq!(seen[2].completed, Some(241970));
        assert_eq!(seen[2].digest.as_deref(), Some(digest));
        assert_eq!(seen[7].status, "success");
        assert_eq!(outcome.digests, vec![digest.to_string()]);
        assert_eq!(outcome.total_bytes, 2142590208);
        assert_eq!(outcome.lines, 8);
        let sent = server.requests_to("POST", "/api/pull");
        assert_eq!(sent[0].json().unwrap(), json!({"model": "llama3.2:1b", "stream": true}));
    }

    #[tokio::test]
    async fn pull_error_line_in_a_200_stream_keeps_the_exact_text() {
        let lines = vec![
            (MS, json!({"status": "pulling manifest"})),
            (MS, json!({"error": "pull model manifest: file does not exist"})),
        ];
        let (_server, client) = server(vec![Route::ndjson("POST", "/api/pull", lines)]).await;
        let mut seen = Vec::new();
        let err = client.pull("nosuch:model", |p| seen.push(p.status)).await.unwrap_err();
        assert_eq!(err, EngineError::InStream { message: "pull model manifest: file does not exist".into() });
        assert_eq!(seen, vec!["pulling manifest"]);
    }

    #[tokio::test]
    async fn pull_without_success_or_with_a_stall_fails_clearly() {
        let lines = vec![(MS, json!({"status": "pulling manifest"}))];
        let (_s, client) = server(vec![Route::ndjson("POST", "/api/pull", lines)]).await;
        let err = client.pull("m", |_| {}).await.unwrap_err();
        assert!(matches!(&err, EngineError::Protocol(m) if m.contains("without \"success\"")), "{err}");

        let lines =
            vec![(MS, json!({"status": "pulling manifest"})), (Duration::from_secs(5), json!({"status": "success"}))];
        let (_s, client) = server(vec![Route::ndjson("POST", "/api/pull", lines)]).await;
        let client = client.with_pull_stall(Duration::from_millis(100));
        let err = client.pull("m", |_| {}).await.unwrap_err();
        assert_eq!(err, EngineError::Timeout(Duration::from_millis(100)));
    }

    #[tokio::test]
    async fn generate_reads_the_documented_final_chunk() {
        let mut chunks = testkit::fake_http::ndjson_chunks(vec![(MS, chat_line("Hello!")), (MS, chat_line(" Hi."))]);
        chunks.push((MS, format!("{FINAL_EXAMPLE}\n").into_bytes()));
        let route = Route::stream("POST", "/api/chat", 200, "application/x-ndjson", chunks);
        let (server, client) = server(vec![route]).await;
        let mut r = req(Duration::from_secs(10));
        r.options.insert("num_gpu".into(), json!(20));
        r.options.insert("keep_alive".into(), json!("10m"));
        let g = client.generate_stream(&r).await.unwrap();
        // The final chunk of the example carries its text in `response` (generate shape): kept too.
        assert_eq!(g.text, "Hello! Hi.Hello! How can I help you today?");
        assert_eq!(g.chunk_times.len(), 3);
        assert_eq!(g.output_tokens, Some(18));
        assert_eq!(g.prompt_tokens, Some(11));
        let decode = g.engine_decode_tps.unwrap();
        assert!((decode - 18.0 / 0.052479709).abs() < 1e-6, "{decode}");
        let prefill = g.engine_prefill_tps.unwrap();
        assert!((prefill - 11.0 / 0.013074791).abs() < 1e-6, "{prefill}");
        assert!((g.engine_prompt_ms.unwrap() - 13.074791).abs() < 1e-9);
        assert!((g.engine_load_ms.unwrap() - 101.397084).abs() < 1e-9);
        assert_eq!(g.finish_reason.as_deref(), Some("stop"));
        assert!(!g.truncated);

        let body = server.requests_to("POST", "/api/chat")[0].json().unwrap();
        assert_eq!(body["model"], "llama3.2");
        assert_eq!(body["stream"], true);
        assert_eq!(body["keep_alive"], "10m");
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}])
        );
        assert_eq!(
            body["options"],
            json!({"seed": 42, "temperature": 0.0, "num_predict": 64, "num_ctx": 4096, "num_gpu": 20})
        );
    }

    #[tokio::test]
    async fn absent_counters_are_zero_and_give_no_rates() {
        let done = json!({"model": "m", "created_at": "x", "message": {"role": "assistant", "content": ""},
            "done": true, "done_reason": "length", "total_duration": 5000, "eval_count": 1, "eval_duration": 1000});
        let (server, client) =
            server(vec![Route::ndjson("POST", "/api/chat", vec![(MS, chat_line("a")), (MS, done)])]).await;
        let mut r = req(Duration::from_secs(10));
        r.system = None;
        r.context = None;
        let g = client.generate_stream(&r).await.unwrap();
        assert_eq!(g.prompt_tokens, Some(0));
        assert_eq!(g.engine_prefill_tps, None);
        assert_eq!(g.engine_prompt_ms, Some(0.0));
        assert_eq!(g.engine_load_ms, Some(0.0));
        assert_eq!(g.engine_decode_tps, Some(1e6));
        assert_eq!(g.finish_reason.as_deref(), Some("length"));
        let body = server.requests()[0].json().unwrap();
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
        assert!(body["options"].get("num_ctx").is_none());
        assert!(body.get("keep_alive").is_none());
    }

    #[tokio::test]
    async fn ttft_and_chunk_times_follow_real_delays() {
        let ts = TokenStream::numbered("llama3.2", 5, Duration::from_millis(150), 50.0);
        let (_s, client) = server(vec![ts.ollama_chat_route()]).await;
        let g = client.generate_stream(&req(Duration::from_secs(10))).await.unwrap();
        assert_eq!(g.text, ts.text());
        assert!(g.ttft >= Duration::from_millis(150), "ttft {:?}", g.ttft);
        // Upper bounds are loose: CI machines are shared and noisy; the lower bound is the point.
        assert!(g.ttft < Duration::from_secs(5), "ttft {:?}", g.ttft);
        assert_eq!(g.chunk_times.len(), 5);
        assert_eq!(g.chunk_times[0], g.ttft);
        for pair in g.chunk_times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(15), "gap {:?}", pair[1] - pair[0]);
        }
        assert!(g.e2e >= Duration::from_millis(150 + 4 * 20), "e2e {:?}", g.e2e);
        assert_eq!(g.output_tokens, Some(5));
        assert!((g.engine_decode_tps.unwrap() - 50.0).abs() < 0.01);
    }

    #[tokio::test]
    async fn thinking_chunks_count_as_tokens_but_not_as_answer() {
        let think = json!({"model": "m", "created_at": "x",
            "message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": false});
        let done =
            json!({"model": "m", "created_at": "x", "message": {"role": "assistant", "content": ""}, "done": true});
        let lines = vec![(Duration::from_millis(50), think), (Duration::from_millis(50), chat_line("ok")), (MS, done)];
        let (_s, client) = server(vec![Route::ndjson("POST", "/api/chat", lines)]).await;
        let g = client.generate_stream(&req(Duration::from_secs(10))).await.unwrap();
        assert_eq!(g.text, "ok");
        assert_eq!(g.chunk_times.len(), 2);
        assert!(g.ttft >= Duration::from_millis(50) && g.ttft < Duration::from_secs(5), "{:?}", g.ttft);
        assert_eq!(g.output_tokens, Some(0));
        assert_eq!(g.finish_reason, None);
    }

    #[tokio::test]
    async fn error_line_inside_a_200_stream_is_in_stream() {
        let message = "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details";
        let lines = vec![(MS, chat_line("The")), (MS, json!({"error": message}))];
        let (_s, client) = server(vec![Route::ndjson("POST", "/api/chat", lines)]).await;
        let err = client.generate_stream(&req(Duration::from_secs(10))).await.unwrap_err();
        assert_eq!(err, EngineError::InStream { message: message.into() });
        assert_eq!(err.engine_text(), Some(message));
    }

    #[tokio::test]
    async fn not_found_is_http_404_with_the_error_text() {
        let route = Route::json("POST", "/api/chat", 404, &json!({"error": "model 'x' not found"}));
        let (_s, client) = server(vec![route]).await;
        let mut r = req(Duration::from_secs(10));
        r.model = "x".into();
        let err = client.generate_stream(&r).await.unwrap_err();
        assert_eq!(err, EngineError::Http { status: 404, message: "model 'x' not found".into() });
    }

    #[tokio::test]
    async fn busy_server_and_plain_text_errors_keep_their_text() {
        let busy = "server busy, please try again.  maximum pending requests exceeded";
        let (_s, client) = server(vec![Route::json("POST", "/api/chat", 503, &json!({"error": busy}))]).await;
        let err = client.generate_stream(&req(Duration::from_secs(10))).await.unwrap_err();
        assert_eq!(err, EngineError::Http { status: 503, message: busy.into() });
        // An unknown route on a Go server: plain text, no JSON.
        let (_s, client) = server(vec![]).await;
        let err = client.version().await.unwrap_err();
        assert_eq!(err, EngineError::Http { status: 404, message: "404 page not found".into() });
    }

    #[tokio::test]
    async fn unparseable_line_is_a_protocol_error_naming_it() {
        let long = format!("<html>{}</html>\n", "x".repeat(1000));
        let chunks = vec![(MS, long.into_bytes())];
        let (_s, client) = server(vec![Route::stream("POST", "/api/chat", 200, "application/x-ndjson", chunks)]).await;
        let err = client.generate_stream(&req(Duration::from_secs(10))).await.unwrap_err();
        let EngineError::Protocol(msg) = &err else { panic!("{err:?}") };
        assert!(msg.contains("/api/chat") && msg.contains("<html>xxx"), "{msg}");
        assert!(msg.len() < 600, "the line is truncated: {} bytes", msg.len());
    }

    #[tokio::test]
    async fn stream_cut_before_done_is_a_protocol_error() {
        let lines = vec![(MS, chat_line("The"))];
        let route = Route::ndjson("POST", "/api/chat", lines).hang_up();
        let (_s, client) = server(vec![route]).await;
        let err = client.generate_stream(&req(Duration::from_secs(10))).await.unwrap_err();
        assert!(matches!(&err, EngineError::Protocol(_)), "{err:?}");
    }

    #[tokio::test]
    async fn slow_generation_times_out_with_the_request_limit() {
        let ts = TokenStream::numbered("m", 50, Duration::from_millis(10), 20.0);
        let (_s, client) = server(vec![ts.ollama_chat_route()]).await;
        let limit = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let err = client.generate_stream(&req(limit)).await.unwrap_err();
        assert_eq!(err, EngineError::Timeout(limit));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_slow_stream_that_keeps_producing_is_not_cut_but_a_silent_one_stalls() {
        // 10 tokens at 8 tokens/s after a 600 ms load: longer than the 300 ms stall limit in
        // all, and before its first token, but never silent that long once it has started.
        let ts = TokenStream::numbered("m", 10, Duration::from_millis(600), 8.0);
        let (_s, client) = server(vec![ts.ollama_chat_route()]).await;
        let r = GenRequest { stall: Some(Duration::from_millis(300)), ..req(Duration::from_secs(20)) };
        let g = client.generate_stream(&r).await.unwrap();
        assert_eq!(g.chunk_times.len(), 10);
        // One token, then nothing for 5 s: a stall, reported well before the request limit.
        let lines = vec![(MS, chat_line("a")), (Duration::from_secs(5), chat_line("b"))];
        let (_s, client) = server(vec![Route::ndjson("POST", "/api/chat", lines)]).await;
        let started = std::time::Instant::now();
        let err = client.generate_stream(&r).await.unwrap_err();
        assert_eq!(err, EngineError::Stalled { after: Duration::from_millis(300), chunks: 1 });
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn unreachable_server_names_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = OllamaClient::new(&url);
        let err = client.version().await.unwrap_err();
        assert!(matches!(&err, EngineError::Unreachable { url: u, .. } if *u == url), "{err:?}");
        assert!(!client.healthy().await);
    }

    #[tokio::test]
    async fn ps_reads_the_documented_example() {
        let body: Value = serde_json::from_str(r#"{"models":[{"name":"mistral:latest","model":"mistral:latest","size":5137025024,"digest":"2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"7.2B","quantization_level":"Q4_0"},"expires_at":"2024-06-04T14:38:31.83753-07:00","size_vram":5137025024,"context_length":4096}]}"#).unwrap();
        let (_s, client) = server(vec![Route::json("GET", "/api/ps", 200, &body)]).await;
        let ps = client.ps().await.unwrap();
        assert_eq!(ps.len(), 1);
        let m = &ps[0];
        assert_eq!(m.name, "mistral:latest");
        assert_eq!(m.size, 5137025024);
        assert_eq!(m.size_vram, 5137025024);
        assert_eq!(m.context_length, Some(4096));
        assert_eq!(m.details.quantization_level.as_deref(), Some("Q4_0"));
        assert_eq!(m.gpu_fraction(), 1.0);
        assert_eq!(m.processor(), "100% GPU");
        assert_eq!(m.expires_at_time().unwrap().to_rfc3339(), "2024-06-04T14:38:31.837530-07:00");

        let partial = PsModel { size: 1000, size_vram: 520, ..Default::default() };
        assert!((partial.gpu_fraction() - 0.52).abs() < 1e-12);
        assert_eq!(partial.processor(), "48%/52% CPU/GPU");
        let cpu = PsModel { size: 1000, ..Default::default() };
        assert_eq!((cpu.gpu_fraction(), cpu.processor().as_str()), (0.0, "100% CPU"));
        // Before v0.9.7 there is no context_length.
        let old = json!({"models": [{"name": "a", "model": "a", "size": 1, "size_vram": 0, "digest": "d", "expires_at": "0001-01-01T00:00:00Z"}]});
        let (_s, client) = server(vec![Route::json("GET", "/api/ps", 200, &old)]).await;
        assert_eq!(client.ps().await.unwrap()[0].context_length, None);
    }

    #[tokio::test]
    async fn show_reads_details_model_info_and_kv_size() {
        let body: Value = serde_json::from_str(r##"{"modelfile":"# Modelfile","parameters":"num_keep 24\nstop \"<|eot_id|>\"","template":"{{ .Prompt }}","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_0"},"model_info":{"general.architecture":"llama","general.file_type":2,"general.parameter_count":8030261248,"general.quantization_version":2,"llama.attention.head_count":32,"llama.attention.head_count_kv":8,"llama.attention.layer_norm_rms_epsilon":0.00001,"llama.block_count":32,"llama.context_length":8192,"llama.embedding_length":4096,"llama.feed_forward_length":14336,"llama.rope.dimension_count":128,"llama.rope.freq_base":500000,"llama.vocab_size":128256,"tokenizer.ggml.tokens":[],"tokenizer.ggml.merges":[]},"capabilities":["completion"],"modified_at":"2024-05-14T09:36:38.000Z"}"##).unwrap();
        let (server, client) = server(vec![Route::json("POST", "/api/show", 200, &body)]).await;
        let info = client.show("llama3").await.unwrap();
        assert_eq!(info.parameter_size.as_deref(), Some("8.0B"));
        assert_eq!(info.quantization_level.as_deref(), Some("Q4_0"));
        assert_eq!(info.family.as_deref(), Some("llama"));
        assert_eq!(info.format.as_deref(), Some("gguf"));
        assert_eq!(info.context_length, Some(8192));
        assert_eq!(info.architecture(), Some("llama"));
        assert_eq!(info.arch_u64("block_count"), Some(32));
        assert_eq!(info.parameter_count(), Some(8030261248));
        assert_eq!(info.capabilities, vec!["completion"]);
        // 2 (K+V) × 32 layers × 8 KV heads × 128 head dim × 2 bytes = 128 KiB per token.
        assert_eq!(info.kv_bytes_per_token_f16(), Some(128 * 1024));
        assert_eq!(server.requests()[0].json().unwrap(), json!({"model": "llama3"}));

        let (_s, client) = server_404_show().await;
        let err = client.show("x").await.unwrap_err();
        assert_eq!(err, EngineError::Http { status: 404, message: "model 'x' not found".into() });
    }

    async fn server_404_show() -> (FakeServer, OllamaClient) {
        server(vec![Route::json("POST", "/api/show", 404, &json!({"error": "model 'x' not found"}))]).await
    }

    #[test]
    fn kv_size_matches_the_documented_models() {
        let info = |l: u64, e: u64, h: u64, kv: Value| ShowInfo {
            model_info: serde_json::from_value(json!({"general.architecture": "llama", "llama.block_count": l,
                "llama.embedding_length": e, "llama.attention.head_count": h, "llama.attention.head_count_kv": kv}))
            .unwrap(),
            ..Default::default()
        };
        // §4: deepseek-coder:33b 248 KiB, codellama:34b 192 KiB, llama3.1:70b 320 KiB, 7B 512 KiB.
        assert_eq!(info(62, 7168, 56, json!(8)).kv_bytes_per_token_f16(), Some(248 * 1024));
        assert_eq!(info(48, 8192, 64, json!(8)).kv_bytes_per_token_f16(), Some(192 * 1024));
        assert_eq!(info(80, 8192, 64, json!(8)).kv_bytes_per_token_f16(), Some(320 * 1024));
        assert_eq!(info(32, 4096, 32, json!(32)).kv_bytes_per_token_f16(), Some(512 * 1024));
        // Per-layer KV head counts are summed.
        assert_eq!(info(2, 4096, 32, json!([8, 0])).kv_bytes_per_token_f16(), Some(8 * 256 * 2));
        let mut explicit = info(32, 4096, 32, json!(8));
        explicit.model_info.insert("llama.attention.key_length".into(), json!(256));
        explicit.model_info.insert("llama.attention.value_length".into(), json!(256));
        assert_eq!(explicit.kv_bytes_per_token_f16(), Some(32 * 8 * 512 * 2));
        assert_eq!(ShowInfo::default().kv_bytes_per_token_f16(), None);
    }

    #[tokio::test]
    async fn version_health_tags_and_unload() {
        let tags = json!({"models": [{"name": "llama3:latest", "model": "llama3:latest", "modified_at": "2024-05-14T09:36:38Z",
            "size": 4661224676u64, "digest": "365c0bd3c000", "details": {"format": "gguf", "family": "llama",
            "parameter_size": "8.0B", "quantization_level": "Q4_0"}}]});
        let (server, client) = server(vec![
            Route::json("GET", "/api/version", 200, &json!({"version": "0.5.1"})),
            Route::text("GET", "/", 200, "Ollama is running"),
            Route::json("GET", "/api/tags", 200, &tags),
            Route::json(
                "POST",
                "/api/generate",
                200,
                &json!({"model": "llama3", "created_at": "x", "response": "",
                "done": true, "done_reason": "unload"}),
            ),
        ])
        .await;
        assert_eq!(client.version().await.unwrap(), "0.5.1");
        assert!(client.healthy().await);
        assert!(client.has_model("llama3").await.unwrap());
        assert!(client.has_model("llama3:latest").await.unwrap());
        assert!(!client.has_model("llama3:70b").await.unwrap());
        assert_eq!(client.list().await.unwrap()[0].size, 4661224676);
        client.unload("llama3").await.unwrap();
        let unload = server.requests_to("POST", "/api/generate")[0].json().unwrap();
        assert_eq!(unload, json!({"model": "llama3", "keep_alive": 0, "stream": false}));
    }

    #[tokio::test]
    async fn answers_are_capped() {
        let piece = "x".repeat(1 << 20);
        let mut lines: Vec<(Duration, Value)> = (0..6).map(|_| (Duration::ZERO, chat_line(&piece))).collect();
        lines.push((
            Duration::ZERO,
            json!({"model": "m", "created_at": "x", "message": {"role": "assistant", "content": ""},
            "done": true, "eval_count": 6, "eval_duration": 1}),
        ));
        let (_s, client) = server(vec![Route::ndjson("POST", "/api/chat", lines)]).await;
        let g = client.generate_stream(&req(Duration::from_secs(20))).await.unwrap();
        assert!(g.truncated);
        assert_eq!(g.text.len(), engine::MAX_ANSWER_BYTES);
        assert_eq!(g.chunk_times.len(), 6);
    }
}
