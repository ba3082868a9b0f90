//! A tiny scripted HTTP/1.1 server for tests and benchmark fixtures.
//!
//! It listens on `127.0.0.1:0`, routes each request by method and path to a scripted
//! response, and sends the body as a list of chunks with a real delay before each
//! (`Transfer-Encoding: chunked`), so streaming clients can be timed for real (TTFT,
//! inter-token gaps, whole-request timeouts). Every request it gets is recorded. It stops
//! when dropped. No dependency beyond tokio and serde_json.
//!
//! [`TokenStream`] builds the two streaming shapes the engine clients read: Ollama's NDJSON
//! (`/api/chat`) and the OpenAI-style SSE stream of llama-server (`/v1/chat/completions`),
//! at a fixed token rate.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One piece of a response body: wait this long, then send these bytes.
pub type Chunk = (Duration, Vec<u8>);

/// Largest request head (request line + headers) the server accepts.
const MAX_HEAD: usize = 64 << 10;
/// Largest request body the server accepts.
const MAX_BODY: usize = 16 << 20;

/// A scripted response for one method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// HTTP method, e.g. `POST` (compared case-insensitively).
    pub method: String,
    /// Path without the query string, e.g. `/api/chat`.
    pub path: String,
    /// Status code to answer with.
    pub status: u16,
    /// `Content-Type` of the answer.
    pub content_type: String,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// The body, as chunks each sent after its delay.
    pub chunks: Vec<Chunk>,
    /// Serve at most this many requests, then let a later matching route answer.
    pub limit: Option<usize>,
    /// Close the connection after the chunks without the final empty chunk (a broken stream).
    pub hang_up: bool,
}

impl Route {
    /// A `200` route with an empty `application/json` body.
    pub fn new(method: &str, path: &str) -> Route {
        Route {
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            status: 200,
            content_type: "application/json; charset=utf-8".to_string(),
            headers: Vec::new(),
            chunks: Vec::new(),
            limit: None,
            hang_up: false,
        }
    }

    /// A route answering `status` with one JSON body.
    pub fn json(method: &str, path: &str, status: u16, body: &serde_json::Value) -> Route {
        Route { status, ..Route::new(method, path) }.with_body(body.to_string().into_bytes())
    }

    /// A route answering `status` with one plain-text body.
    pub fn text(method: &str, path: &str, status: u16, body: &str) -> Route {
        Route { status, ..Route::new(method, path) }
            .with_content_type("text/plain; charset=utf-8")
            .with_body(body.as_bytes().to_vec())
    }

    /// A `200` NDJSON stream (`application/x-ndjson`): each value is one line, sent after its delay.
    pub fn ndjson(method: &str, path: &str, lines: Vec<(Duration, serde_json::Value)>) -> Route {
        Route::new(method, path).with_content_type("application/x-ndjson").with_chunks(ndjson_chunks(lines))
    }

    /// A route with a status, content type and body chunks given in full.
    pub fn stream(method: &str, path: &str, status: u16, content_type: &str, chunks: Vec<Chunk>) -> Route {
        Route { status, ..Route::new(method, path) }.with_content_type(content_type).with_chunks(chunks)
    }

    /// Replaces the body with one chunk sent at once.
    pub fn with_body(mut self, body: Vec<u8>) -> Route {
        self.chunks = vec![(Duration::ZERO, body)];
        self
    }

    /// Replaces the body chunks.
    pub fn with_chunks(mut self, chunks: Vec<Chunk>) -> Route {
        self.chunks = chunks;
        self
    }

    /// Sets the status code.
    pub fn with_status(mut self, status: u16) -> Route {
        self.status = status;
        self
    }

    /// Sets the `Content-Type`.
    pub fn with_content_type(mut self, content_type: &str) -> Route {
        self.content_type = content_type.to_string();
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Serves at most `n` requests (later matching routes answer the rest).
    pub fn times(mut self, n: usize) -> Route {
        self.limit = Some(n);
        self
    }

    /// Ends the body by closing the connection instead of with the final empty chunk.
    pub fn hang_up(mut self) -> Route {
        self.hang_up = true;
        self
    }
}

/// Turns JSON values into NDJSON chunks, one line per chunk.
pub fn ndjson_chunks(lines: Vec<(Duration, serde_json::Value)>) -> Vec<Chunk> {
    lines
        .into_iter()
        .map(|(delay, value)| {
            let mut line = value.to_string().into_bytes();
            line.push(b'\n');
            (delay, line)
        })
        .collect()
}

/// A request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Method, upper case.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query string without `?`, if any.
    pub query: Option<String>,
    /// Headers as sent (names lower-cased).
    pub headers: Vec<(String, String)>,
    /// Body bytes (chunked bodies decoded).
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct RouteSlot {
    route: Route,
    served: AtomicUsize,
}

struct Shared {
    routes: Vec<RouteSlot>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running fake server; it stops (and drops open connections) when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl FakeServer {
    /// Starts serving `routes` on a free loopback port (needs a tokio runtime).
    pub async fn start(routes: Vec<Route>) -> io::Result<FakeServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            routes: routes.into_iter().map(|route| RouteSlot { route, served: AtomicUsize::new(0) }).collect(),
            requests: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(FakeServer { addr, shared, task })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        match self.shared.requests.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The requests received for one method and path.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.method.eq_ignore_ascii_case(method) && r.path == path).collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Dropping the set (when this task is aborted) aborts every open connection.
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while conns.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        conns.spawn(async move {
            if let Err(e) = serve_conn(stream, shared).await {
                tracing::debug!("fake http connection ended: {e}");
            }
        });
    }
}

async fn serve_conn(mut stream: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let Some(req) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let route = shared.routes.iter().find(|slot| {
        slot.route.method.eq_ignore_ascii_case(&req.method)
            && slot.route.path == req.path
            && slot.route.limit.is_none_or(|n| slot.served.load(Ordering::SeqCst) < n)
    });
    let head_only = req.method == "HEAD";
    match shared.requests.lock() {
        Ok(mut guard) => guard.push(req),
        Err(poisoned) => poisoned.into_inner().push(req),
    }
    let fallback;
    let route = match route {
        Some(slot) => {
            slot.served.fetch_add(1, Ordering::SeqCst);
            &slot.route
        }
        None => {
            // What Go's net/http (and so Ollama's gin router) answers for an unknown route.
            fallback = Route::text("", "", 404, "404 page not found");
            &fallback
        }
    };
    write_response(&mut stream, route, head_only).await
}

async fn write_response(stream: &mut TcpStream, route: &Route, head_only: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
        route.status,
        reason(route.status),
        route.content_type
    );
    for (name, value) in &route.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.flush().await?;
    if head_only {
        return stream.shutdown().await;
    }
    for (delay, bytes) in &route.chunks {
        if !delay.is_zero() {
            tokio::time::sleep(*delay).await;
        }
        if bytes.is_empty() {
            continue;
        }
        let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
        frame.extend_from_slice(bytes);
        frame.extend_from_slice(b"\r\n");
        stream.write_all(&frame).await?;
        stream.flush().await?;
    }
    if !route.hang_up {
        stream.write_all(b"0\r\n\r\n").await?;
        stream.flush().await?;
    }
    stream.shutdown().await
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Reads more bytes into `buf`; false at end of stream.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut tmp = [0u8; 8192];
    let n = stream.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n > 0)
}

/// Reads one HTTP/1.1 request (head and body, chunked or sized); `None` when the peer closed
/// before sending one. Shared with the `tc-fake-engine` fixture.
pub async fn read_request(stream: &mut TcpStream) -> io::Result<Option<RecordedRequest>> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        if !read_more(stream, &mut buf).await? {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf.split_off(head_end + 4);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_ascii_uppercase();
    let target = parts.next().ok_or_else(|| bad("request line without a target"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let chunked = header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked_body(stream, &mut rest).await?
    } else {
        let len: usize = match header("content-length") {
            Some(v) => v.parse().map_err(|_| bad("bad content-length"))?,
            None => 0,
        };
        if len > MAX_BODY {
            return Err(bad("request body too large"));
        }
        while rest.len() < len {
            if !read_more(stream, &mut rest).await? {
                return Err(bad("request body ended early"));
            }
        }
        rest.truncate(len);
        rest
    };
    Ok(Some(RecordedRequest { method, path, query, headers, body }))
}

async fn read_chunked_body(stream: &mut TcpStream, rest: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(pos) = find(rest, b"\r\n") {
                break pos;
            }
            if !read_more(stream, rest).await? {
                return Err(bad("chunked body ended early"));
            }
        };
        let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| bad("bad chunk size"))?;
        rest.drain(..line_end + 2);
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(bad("request body too large"));
        }
        while rest.len() < size + 2 {
            if !read_more(stream, rest).await? {
                return Err(bad("chunked body ended early"));
            }
        }
        body.extend_from_slice(&rest[..size]);
        rest.drain(..size + 2);
    }
}

/// A scripted token stream at a fixed rate, rendered as an engine would stream it.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenStream {
    /// Model name put in each chunk.
    pub model: String,
    /// The tokens (one content chunk each).
    pub tokens: Vec<String>,
    /// Delay before the first token (the engine's prefill).
    pub first_token_after: Duration,
    /// Tokens per second after the first one (0 = no delay between tokens).
    pub tokens_per_second: f64,
    /// Prompt tokens reported in the final counters.
    pub prompt_tokens: u32,
    /// Load time reported by Ollama's final chunk (`load_duration`; absent when zero).
    pub load: Duration,
    /// Why it stopped (`stop` or `length`).
    pub done_reason: String,
}

impl TokenStream {
    /// A stream of `tokens` with the first after `first_token_after`, then `tokens_per_second`.
    pub fn new(model: &str, tokens: Vec<String>, first_token_after: Duration, tokens_per_second: f64) -> TokenStream {
        TokenStream {
            model: model.to_string(),
            tokens,
            first_token_after,
            tokens_per_second,
            prompt_tokens: 11,
            load: Duration::ZERO,
            done_reason: "stop".to_string(),
        }
    }

    /// `n` tokens `"tok0 "`, `"tok1 "`, … at the given timing.
    pub fn numbered(model: &str, n: usize, first_token_after: Duration, tokens_per_second: f64) -> TokenStream {
        let tokens = (0..n).map(|i| format!("tok{i} ")).collect();
        TokenStream::new(model, tokens, first_token_after, tokens_per_second)
    }

    /// The gap between two tokens.
    pub fn gap(&self) -> Duration {
        if self.tokens_per_second > 0.0 && self.tokens_per_second.is_finite() {
            Duration::from_secs_f64(1.0 / self.tokens_per_second)
        } else {
            Duration::ZERO
        }
    }

    /// Decode time the engine would report: one gap per token.
    pub fn decode_time(&self) -> Duration {
        self.gap() * u32::try_from(self.tokens.len()).unwrap_or(u32::MAX)
    }

    fn delay(&self, i: usize) -> Duration {
        if i == 0 { self.first_token_after } else { self.gap() }
    }

    /// The whole answer text.
    pub fn text(&self) -> String {
        self.tokens.concat()
    }

    /// Ollama `/api/chat` NDJSON: one chunk per token, then the `done: true` chunk with counters
    /// (zero counters left out, as Ollama's `omitempty` does).
    pub fn ollama_chat_ndjson(&self) -> Vec<Chunk> {
        let created = "2025-10-17T23:14:07.414671Z";
        let mut lines: Vec<(Duration, serde_json::Value)> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, tok)| {
                (
                    self.delay(i),
                    serde_json::json!({"model": self.model, "created_at": created,
                        "message": {"role": "assistant", "content": tok}, "done": false}),
                )
            })
            .collect();
        let mut last = serde_json::json!({"model": self.model, "created_at": created,
            "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": self.done_reason});
        let eval_ns = nanos(self.decode_time());
        let prompt_ns = nanos(self.first_token_after);
        let load_ns = nanos(self.load);
        let counters = [
            ("total_duration", load_ns + prompt_ns + eval_ns),
            ("load_duration", load_ns),
            ("prompt_eval_count", u64::from(self.prompt_tokens)),
            ("prompt_eval_duration", prompt_ns),
            ("eval_count", self.tokens.len() as u64),
            ("eval_duration", eval_ns),
        ];
        if let Some(obj) = last.as_object_mut() {
            for (key, value) in counters {
                if value > 0 {
                    obj.insert(key.to_string(), value.into());
                }
            }
        }
        let final_delay = if self.tokens.is_empty() { self.first_token_after } else { Duration::ZERO };
        lines.push((final_delay, last));
        ndjson_chunks(lines)
    }

    /// llama-server `/v1/chat/completions` SSE: a role chunk and the first token, one chunk per
    /// token, a last chunk with `finish_reason`, `usage` and `timings`, then `data: [DONE]`.
    pub fn openai_sse(&self) -> Vec<Chunk> {
        let base = |choices: serde_json::Value| {
            serde_json::json!({"choices": choices, "created": 1760742847, "id": "chatcmpl-fake",
                "model": self.model, "system_fingerprint": "b0000-fake", "object": "chat.completion.chunk"})
        };
        let mut events: Vec<(Duration, String)> = Vec::new();
        events.push((
            self.first_token_after,
            base(serde_json::json!([{"finish_reason": null, "index": 0,
                "delta": {"role": "assistant", "content": null}}]))
            .to_string(),
        ));
        for (i, tok) in self.tokens.iter().enumerate() {
            let delay = if i == 0 { Duration::ZERO } else { self.gap() };
            events.push((
                delay,
                base(serde_json::json!([{"finish_reason": null, "index": 0, "delta": {"content": tok}}])).to_string(),
            ));
        }
        let n = self.tokens.len() as u64;
        let prompt_ms = millis(self.first_token_after);
        let predicted_ms = millis(self.decode_time());
        let per_second = |count: u64, ms: f64| {
            if ms > 0.0 { count as f64 / ms * 1000.0 } else { 0.0 }
        };
        let per_token = |count: u64, ms: f64| if count > 0 { ms / count as f64 } else { 0.0 };
        let prompt_n = u64::from(self.prompt_tokens);
        let mut last = base(serde_json::json!([{"finish_reason": self.done_reason, "index": 0, "delta": {}}]));
        if let Some(obj) = last.as_object_mut() {
            obj.insert(
                "usage".into(),
                serde_json::json!({"completion_tokens": n, "prompt_tokens": prompt_n,
                    "total_tokens": n + prompt_n, "prompt_tokens_details": {"cached_tokens": 0}}),
            );
            obj.insert(
                "timings".into(),
                serde_json::json!({"cache_n": 0, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
                    "prompt_per_token_ms": per_token(prompt_n, prompt_ms),
                    "prompt_per_second": per_second(prompt_n, prompt_ms),
                    "predicted_n": n, "predicted_ms": predicted_ms,
                    "predicted_per_token_ms": per_token(n, predicted_ms),
                    "predicted_per_second": per_second(n, predicted_ms)}),
            );
        }
        events.push((Duration::ZERO, last.to_string()));
        events.push((Duration::ZERO, "[DONE]".to_string()));
        events.into_iter().map(|(delay, data)| (delay, format!("data: {data}\n\n").into_bytes())).collect()
    }

    /// A route serving [`TokenStream::ollama_chat_ndjson`] at `POST /api/chat`.
    pub fn ollama_chat_route(&self) -> Route {
        Route::stream("POST", "/api/chat", 200, "application/x-ndjson", self.ollama_chat_ndjson())
    }

    /// A route serving [`TokenStream::openai_sse`] at `POST /v1/chat/completions`.
    pub fn openai_chat_route(&self) -> Route {
        Route::stream("POST", "/v1/chat/completions", 200, "text/event-stream", self.openai_sse())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn raw(server: &FakeServer, request: &[u8]) -> String {
        let mut s = TcpStream::connect(server.addr()).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn routes_records_and_answers_chunked() {
        let server = FakeServer::start(vec![
            Route::json("POST", "/a", 201, &serde_json::json!({"ok": true})).times(1),
            Route::text("POST", "/a", 500, "second"),
        ])
        .await
        .unwrap();
        let first = raw(&server, b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n{\"k\":1}").await;
        assert!(first.starts_with("HTTP/1.1 201 Created\r\n"), "{first}");
        assert!(first.contains("Transfer-Encoding: chunked"));
        assert!(first.ends_with("b\r\n{\"ok\":true}\r\n0\r\n\r\n"), "{first}");
        let second =
            raw(&server, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
                .await;
        assert!(second.starts_with("HTTP/1.1 500"), "{second}");
        let missing = raw(&server, b"GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404") && missing.contains("404 page not found"));
        let reqs = server.requests();
        assert_eq!(reqs.len(), 3);
        assert_eq!(reqs[0].query.as_deref(), Some("x=1"));
        assert_eq!(reqs[0].json().unwrap()["k"], 1);
        assert_eq!(reqs[1].body_text(), "abcde");
        assert_eq!(server.requests_to("GET", "/nope").len(), 1);
    }

    #[tokio::test]
    async fn dropping_the_server_stops_listening_and_closes_streams() {
        let slow = Route::stream(
            "GET",
            "/slow",
            200,
            "text/plain",
            vec![(Duration::ZERO, b"a".to_vec()), (Duration::from_secs(30), b"b".to_vec())],
        );
        let server = FakeServer::start(vec![slow]).await.unwrap();
        let addr = server.addr();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\n\r\n").await.unwrap();
        let mut first = [0u8; 64];
        assert!(s.read(&mut first).await.unwrap() > 0);
        drop(server);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the open stream is closed on drop");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "nothing listens after drop");
    }

    #[tokio::test]
    async fn token_streams_have_engine_shapes() {
        let ts = TokenStream::numbered("m", 3, Duration::from_millis(5), 100.0);
        let nd = ts.ollama_chat_ndjson();
        assert_eq!(nd.len(), 4);
        assert_eq!(nd[0].0, Duration::from_millis(5));
        assert_eq!(nd[1].0, Duration::from_millis(10));
        let last: serde_json::Value = serde_json::from_slice(&nd[3].1).unwrap();
        assert_eq!(last["done"], true);
        assert_eq!(last["eval_count"], 3);
        assert_eq!(last["eval_duration"], 30_000_000);
        assert!(last.get("load_duration").is_none(), "zero counters are absent");
        let sse = ts.openai_sse();
        let text: String = sse.iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(text.contains("\"predicted_n\":3"));
        assert_eq!(text.matches("\"content\":\"tok").count(), 3);
    }
}
