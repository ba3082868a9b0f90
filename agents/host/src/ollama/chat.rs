//! Chat generation over `/api/chat`: the request body, its `options`, and the NDJSON stream
//! read back into a timed [`Generation`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::OllamaClient;
use super::http::{NdjsonLines, bad_line, check_status, error_text};
use super::types::ChatChunk;
use crate::engine::{self, EngineError, GenRequest, Generation};

/// Request keys that Ollama reads at the top level of `/api/chat`, not inside `options`.
const TOP_LEVEL_KEYS: [&str; 3] = ["keep_alive", "think", "format"];

impl OllamaClient {
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
