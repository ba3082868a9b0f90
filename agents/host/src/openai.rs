//! The OpenAI-compatible API of llama-server (and vLLM): health, props, streamed chat.

use crate::engine::{EngineError, GenRequest, Generation, LineSplitter, append_capped, http_client};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// Health of a llama-server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// `200 {"status":"ok"}`.
    Ready,
    /// `503` while the model loads.
    Loading,
}

/// A client for one OpenAI-compatible server.
#[derive(Debug, Clone)]
pub struct OpenAiClient {
    base: String,
    http: reqwest::Client,
}

fn unreachable(base: &str, e: &reqwest::Error) -> EngineError {
    EngineError::Unreachable { url: base.into(), reason: e.to_string() }
}

/// Pulls the error text out of `{"error":{"message":…}}`, `{"error":"…"}` or plain text.
pub fn error_text(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match &v["error"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o.get("message").and_then(Value::as_str).unwrap_or(body).to_string(),
            _ => body.chars().take(500).collect(),
        },
        Err(_) => body.chars().take(500).collect(),
    }
}

impl OpenAiClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_string(), http: http_client() }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, EngineError> {
        let r = self.get("/health").await?;
        match r.status().as_u16() {
            200 => Ok(Health::Ready),
            503 => Ok(Health::Loading),
            s => Err(EngineError::Http { status: s, message: error_text(&r.text().await.unwrap_or_default()) }),
        }
    }

    /// `GET path` with a 5 s limit.
    async fn get(&self, path: &str) -> Result<reqwest::Response, EngineError> {
        self.http
            .get(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))
    }

    /// Streams one chat completion and times it.
    pub async fn generate_stream(&self, req: &GenRequest) -> Result<Generation, EngineError> {
        let deadline = req.timeout;
        match tokio::time::timeout(deadline, self.generate_inner(req)).await {
            Ok(r) => r,
            Err(_) => Err(EngineError::Timeout(deadline)),
        }
    }

    async fn generate_inner(&self, req: &GenRequest) -> Result<Generation, EngineError> {
        let mut messages = Vec::new();
        if let Some(s) = &req.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        messages.push(json!({"role": "user", "content": req.prompt}));
        let body = json!({
            "model": req.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "seed": req.seed,
            "cache_prompt": false,
        });
        let start = Instant::now();
        let resp = self
            .http
            .post(format!("{}/v1/chat/completions", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp.text().await.unwrap_or_default();
            return Err(EngineError::Http { status, message: error_text(&text) });
        }
        let mut g = Generation::default();
        let mut lines = LineSplitter::default();
        let mut stream = resp.bytes_stream();
        let mut done = false;
        let mut content_chunks = 0u32;
        loop {
            let next = match req.stall.filter(|_| !g.chunk_times.is_empty()) {
                Some(limit) => tokio::time::timeout(limit, stream.next())
                    .await
                    .map_err(|_| EngineError::Stalled { after: limit, chunks: g.chunk_times.len() })?,
                None => stream.next().await,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| EngineError::Protocol(format!("stream broke: {e}")))?;
            let now = start.elapsed();
            for line in lines.push(&chunk)? {
                if let Some(stop) = self.on_sse_line(&line, now, &mut g, &mut content_chunks)? {
                    done = stop;
                }
            }
            if done {
                break;
            }
        }
        if let (false, Some(rest)) = (done, lines.finish()) {
            self.on_sse_line(&rest, start.elapsed(), &mut g, &mut content_chunks)?;
        }
        g.e2e = start.elapsed();
        if g.output_tokens.is_none() && content_chunks > 0 {
            g.output_tokens = Some(content_chunks);
        }
        if g.chunk_times.is_empty() {
            g.ttft = g.e2e;
        }
        Ok(g)
    }

    /// Applies one SSE line; `Some(true)` at `[DONE]`.
    fn on_sse_line(
        &self,
        line: &str,
        now: Duration,
        g: &mut Generation,
        chunks: &mut u32,
    ) -> Result<Option<bool>, EngineError> {
        let Some(data) = line.strip_prefix("data:") else { return Ok(None) };
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Some(true));
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            EngineError::Protocol(format!("SSE data is not JSON ({e}): {}", data.chars().take(120).collect::<String>()))
        })?;
        if !v["error"].is_null() {
            return Err(EngineError::InStream { message: error_text(data) });
        }
        if let Some(choice) = v["choices"].get(0) {
            if let Some(piece) = choice["delta"]["content"].as_str().filter(|s| !s.is_empty()) {
                if g.chunk_times.is_empty() {
                    g.ttft = now;
                }
                g.chunk_times.push(now);
                *chunks += 1;
                if append_capped(&mut g.text, piece) {
                    g.truncated = true;
                }
            }
            if let Some(r) = choice["finish_reason"].as_str() {
                g.finish_reason = Some(r.to_string());
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            g.output_tokens = u["completion_tokens"].as_u64().map(|n| n as u32).or(g.output_tokens);
            g.prompt_tokens = u["prompt_tokens"].as_u64().map(|n| n as u32).or(g.prompt_tokens);
        }
        if let Some(t) = v.get("timings").filter(|t| t.is_object()) {
            g.engine_decode_tps = t["predicted_per_second"].as_f64().or(g.engine_decode_tps);
            g.engine_prefill_tps = t["prompt_per_second"].as_f64().or(g.engine_prefill_tps);
            g.engine_prompt_ms = t["prompt_ms"].as_f64().or(g.engine_prompt_ms);
            if g.output_tokens.is_none() {
                g.output_tokens = t["predicted_n"].as_u64().map(|n| n as u32);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::fake_http::{FakeServer, Route, TokenStream};

    #[tokio::test]
    async fn a_stream_is_judged_by_progress_not_by_its_length() {
        let req = GenRequest {
            model: "m".into(),
            system: None,
            prompt: "Say hello.".into(),
            max_tokens: 8,
            temperature: 0.0,
            seed: 1,
            context: None,
            options: Default::default(),
            timeout: Duration::from_secs(20),
            stall: Some(Duration::from_millis(300)),
        };
        // A 600 ms prefill, then 6 tokens at 10 tokens/s: never silent for 300 ms once started.
        let ts = TokenStream::numbered("m", 6, Duration::from_millis(600), 10.0);
        let server = FakeServer::start(vec![ts.openai_chat_route()]).await.unwrap();
        let g = OpenAiClient::new(&server.url()).generate_stream(&req).await.unwrap();
        assert_eq!(g.chunk_times.len(), 6);
        // The same stream with 5 s of silence after its second token: a stall.
        let mut chunks = ts.openai_sse();
        chunks[2].0 = Duration::from_secs(5);
        let route = Route::stream("POST", "/v1/chat/completions", 200, "text/event-stream", chunks);
        let server = FakeServer::start(vec![route]).await.unwrap();
        let started = std::time::Instant::now();
        let err = OpenAiClient::new(&server.url()).generate_stream(&req).await.unwrap_err();
        assert!(matches!(err, EngineError::Stalled { chunks: 1 | 2, .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            error_text(
                r#"{"error":{"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error"}}"#
            ),
            "the request exceeds the available context size, try increasing it"
        );
        assert_eq!(error_text(r#"{"error":"model 'x' not found"}"#), "model 'x' not found");
        assert_eq!(error_text("plain"), "plain");
    }

    #[test]
    fn sse_lines_fill_the_generation() {
        let c = OpenAiClient::new("http://127.0.0.1:1");
        let mut g = Generation::default();
        let mut n = 0;
        let ms = Duration::from_millis;
        c.on_sse_line(r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#, ms(5), &mut g, &mut n).unwrap();
        c.on_sse_line(r#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#, ms(40), &mut g, &mut n).unwrap();
        c.on_sse_line(
            r#"data: {"choices":[{"delta":{"content":" there"},"finish_reason":"stop"}]}"#,
            ms(60),
            &mut g,
            &mut n,
        )
        .unwrap();
        c.on_sse_line(
            r#"data: {"choices":[],"usage":{"completion_tokens":2,"prompt_tokens":9},"timings":{"prompt_n":9,"prompt_ms":12.5,"prompt_per_second":720.0,"predicted_n":2,"predicted_ms":20.0,"predicted_per_second":100.0}}"#,
            ms(61),
            &mut g,
            &mut n,
        )
        .unwrap();
        assert_eq!(c.on_sse_line("data: [DONE]", ms(62), &mut g, &mut n).unwrap(), Some(true));
        assert_eq!(g.text, "Hi there");
        assert_eq!(g.ttft, ms(40));
        assert_eq!(g.chunk_times, vec![ms(40), ms(60)]);
        assert_eq!(g.output_tokens, Some(2));
        assert_eq!(g.prompt_tokens, Some(9));
        assert_eq!(g.engine_decode_tps, Some(100.0));
        assert_eq!(g.engine_prompt_ms, Some(12.5));
        assert_eq!(g.finish_reason.as_deref(), Some("stop"));
        let e = c.on_sse_line(r#"data: {"error":{"code":500,"message":"boom"}}"#, ms(70), &mut g, &mut n).unwrap_err();
        assert_eq!(e, EngineError::InStream { message: "boom".into() });
        assert!(matches!(c.on_sse_line("data: {nope", ms(70), &mut g, &mut n), Err(EngineError::Protocol(_))));
    }
}
