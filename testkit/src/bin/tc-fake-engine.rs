//! `tc-fake-engine`: a test and benchmark fixture that behaves like llama.cpp's `llama-server` or
//! like `ollama serve` on the wire, and generates tokens at a fixed rate instead of running a
//! model. It lets the scale test and the pull-ahead benchmark run a 20-model cycle in minutes
//! on two CPU cores, with timings that are known in advance.
//!
//! Two modes, chosen by the command line as the Writer starts the real engines:
//!
//! - `tc-fake-engine --model F --host H --port P [-c N] [-np N] [...]` — llama-server: `GET
//!   /health`, `GET /props`, `POST /v1/chat/completions` (SSE with `usage` and `timings`, ended
//!   by `data: [DONE]`), `GET /slots`. Unknown flags are ignored, as the Writer passes llama.cpp's.
//!   `--version` prints `version: 0 (tc-fake-engine)`.
//! - `tc-fake-engine serve` — Ollama, listening on `$OLLAMA_HOST` (default `127.0.0.1:11434`):
//!   `GET /`, `/api/version`, `/api/tags`, `/api/ps`, `POST /api/show`, `/api/pull` (NDJSON
//!   progress at a fixed byte rate; the model is then recorded under `$OLLAMA_MODELS`, default
//!   `~/.ollama/models`, so a later server finds it), `/api/chat` and `/api/generate` (NDJSON,
//!   final chunk with the nanosecond counters), `DELETE /api/delete`.
//!
//! Shapes follow `reference/engine-api-facts.md` §1 and §6. Rates and sizes come from the
//! environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `TC_FAKE_TPS` | generated tokens per second | 50 |
//! | `TC_FAKE_PROMPT_MS` | prefill time before the first token, ms | 5 |
//! | `TC_FAKE_LOAD_MS` | time until `/health` answers 200 (503 `Loading model` before), ms | 0 |
//! | `TC_FAKE_MODEL_BYTES` | size of a pulled model (Ollama), bytes | 100000000 |
//! | `TC_FAKE_PULL_BPS` | pull rate (Ollama), bytes per second | 1000000000 |
//! | `TC_FAKE_OLLAMA_VERSION` | what `/api/version` answers | 0.12.6 |
//! | `TC_FAKE_FAIL_REQUEST` | `N[:kind]`: the N-th generating `/api/chat` or `/api/generate` request (from 1, over the server's life) fails once, as Ollama 0.12.6 does: HTTP 500 `{"error": …}` (`o:server/routes.go:2259-2271`). `kind`: `system-memory` (`o:llm/server.go:541`), `layout` (`:815`), `runner-stopped` (`:1497`, the default); `busy` answers HTTP 503 with the scheduler's full-queue text (`o:server/sched.go:67`) | none |
//! | `TC_FAKE_CRASH_REQUEST` | `N`: the process exits (status 1, after printing `tc-fake-engine: crashing on generating request N`) when its N-th generating request arrives (from 1, over the process's life; either mode), dropping the connection unanswered: an engine that crashes, which no client retries | none |
//! | `TC_FAKE_VERIFY_MS` | silence after `verifying sha256 digest` in a pull (`o:server/images.go:668-689`), ms | 0 |
//!
//! A tag whose name contains `does-not-exist` fails its pull with Ollama's exact
//! `pull model manifest: file does not exist`.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::fake_http::{RecordedRequest, read_request, reason};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Words the fake answers are made of (enough variety for the answer analysis).
const WORDS: [&str; 12] = [
    "hello",
    "homelab",
    "server",
    "memory",
    "learning",
    "model",
    "weights",
    "docker",
    "isolation",
    "gpu",
    "and",
    "the",
];

#[derive(Debug, Clone)]
struct Rates {
    tps: f64,
    prompt_ms: u64,
    load_ms: u64,
    model_bytes: u64,
    pull_bps: f64,
    ollama_version: String,
    verify_ms: u64,
    fail_request: Option<(u64, String)>,
    crash_request: Option<u64>,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| format!("${name} is `{v}`, which is not a number")),
        Err(_) => Ok(default),
    }
}

impl Rates {
    fn from_env() -> Result<Rates, String> {
        let r = Rates {
            tps: env_num("TC_FAKE_TPS", 50.0)?,
            prompt_ms: env_num("TC_FAKE_PROMPT_MS", 5)?,
            load_ms: env_num("TC_FAKE_LOAD_MS", 0)?,
            model_bytes: env_num("TC_FAKE_MODEL_BYTES", 100_000_000)?,
            pull_bps: env_num("TC_FAKE_PULL_BPS", 1e9)?,
            ollama_version: std::env::var("TC_FAKE_OLLAMA_VERSION").unwrap_or_else(|_| "0.12.6".into()),
            verify_ms: env_num("TC_FAKE_VERIFY_MS", 0)?,
            fail_request: match std::env::var("TC_FAKE_FAIL_REQUEST") {
                Ok(v) => Some(parse_fail_request(&v)?),
                Err(_) => None,
            },
            crash_request: match std::env::var("TC_FAKE_CRASH_REQUEST") {
                Ok(_) => Some(env_num("TC_FAKE_CRASH_REQUEST", 0u64)?).filter(|n| *n > 0),
                Err(_) => None,
            },
        };
        if !(r.tps.is_finite() && r.tps > 0.0) {
            return Err(format!("$TC_FAKE_TPS must be a positive number, got {}", r.tps));
        }
        if !(r.pull_bps.is_finite() && r.pull_bps > 0.0) {
            return Err(format!("$TC_FAKE_PULL_BPS must be a positive number, got {}", r.pull_bps));
        }
        Ok(r)
    }
}

/// Counts a generating request; on the `$TC_FAKE_CRASH_REQUEST`-th the whole process exits at
/// once, the request unanswered (its connection drops as the process goes).
fn count_request(counter: &std::sync::atomic::AtomicU64, rates: &Rates) -> u64 {
    let nth = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if rates.crash_request == Some(nth) {
        eprintln!("tc-fake-engine: crashing on generating request {nth} (TC_FAKE_CRASH_REQUEST)");
        std::process::exit(1);
    }
    nth
}

/// `N[:kind]` of `$TC_FAKE_FAIL_REQUEST`.
fn parse_fail_request(v: &str) -> Result<(u64, String), String> {
    let (n, kind) = v.trim().split_once(':').unwrap_or((v.trim(), "runner-stopped"));
    let n: u64 = n.parse().map_err(|_| format!("$TC_FAKE_FAIL_REQUEST is `{v}`: want N or N:kind"))?;
    if ollama_failure(kind).is_none() {
        return Err(format!("$TC_FAKE_FAIL_REQUEST kind `{kind}`: want system-memory, layout, runner-stopped or busy"));
    }
    Ok((n, kind.to_string()))
}

/// Ollama 0.12.6's HTTP status and error text for a failure kind (paraphrased sizes, exact wording).
fn ollama_failure(kind: &str) -> Option<(u16, &'static str)> {
    match kind {
        // o:llm/server.go:541 (sizes as format.HumanBytes2 prints them).
        "system-memory" => Some((500, "model requires more system memory (38.2 GiB) than is available (30.1 GiB)")),
        // o:llm/server.go:815.
        "layout" => Some((500, "memory layout cannot be allocated")),
        // o:llm/server.go:1497.
        "runner-stopped" => Some((
            500,
            "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details",
        )),
        // o:server/sched.go:67 (ErrMaxQueue, two spaces), answered 503.
        "busy" => Some((503, "server busy, please try again.  maximum pending requests exceeded")),
        _ => None,
    }
}

/// llama-server's settings from its command line.
#[derive(Debug, Clone)]
struct LlamaArgs {
    host: String,
    port: u16,
    model: PathBuf,
    ctx: u32,
    parallel: u32,
}

fn parse_llama_args(args: &[String]) -> Result<LlamaArgs, String> {
    let mut a = LlamaArgs { host: "127.0.0.1".into(), port: 8080, model: PathBuf::new(), ctx: 4096, parallel: 1 };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("error: {name} needs a value"));
        match flag.as_str() {
            "--host" => a.host = value("--host")?,
            "--port" => {
                let v = value("--port")?;
                a.port = v.parse().map_err(|_| format!("error: invalid --port `{v}`"))?;
            }
            "-m" | "--model" => a.model = PathBuf::from(value("--model")?),
            "-c" | "--ctx-size" => {
                let v = value("-c")?;
                a.ctx = v.parse().map_err(|_| format!("error: invalid -c `{v}`"))?;
            }
            "-np" | "--parallel" => {
                let v = value("-np")?;
                a.parallel = v.parse().map_err(|_| format!("error: invalid -np `{v}`"))?;
            }
            // Flags with a value that the fixture accepts and ignores.
            "-t" | "--threads" | "-ngl" | "--gpu-layers" | "--n-gpu-layers" | "-b" | "-ub" | "-ctk" | "-ctv"
            | "--cache-type-k" | "--cache-type-v" | "-fa" | "--flash-attn" | "--alias" | "-lv" => {
                value(flag)?;
            }
            _ => {}
        }
    }
    if a.model.as_os_str().is_empty() {
        return Err("error: --model is required".into());
    }
    Ok(a)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--version") {
        println!("version: 0 (tc-fake-engine)");
        println!("built for threadcycle's tests: a fixed-rate fake engine");
        return;
    }
    let rates = match Rates::from_env() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tc-fake-engine: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tc-fake-engine: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = if args.first().map(String::as_str) == Some("serve") {
        rt.block_on(ollama_main(rates))
    } else {
        match parse_llama_args(&args) {
            Ok(a) => rt.block_on(llama_main(a, rates)),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP plumbing

/// A response being written: status line and headers now, then chunks.
struct Writer<'a> {
    stream: &'a mut TcpStream,
}

impl<'a> Writer<'a> {
    async fn start(stream: &'a mut TcpStream, status: u16, content_type: &str) -> io::Result<Writer<'a>> {
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            reason(status)
        );
        stream.write_all(head.as_bytes()).await?;
        Ok(Writer { stream })
    }

    async fn chunk(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut frame = format!("{:x}\r\n", bytes.len()).into_bytes();
        frame.extend_from_slice(bytes);
        frame.extend_from_slice(b"\r\n");
        self.stream.write_all(&frame).await?;
        self.stream.flush().await
    }

    async fn finish(self) -> io::Result<()> {
        self.stream.write_all(b"0\r\n\r\n").await?;
        self.stream.flush().await?;
        self.stream.shutdown().await
    }
}

async fn send_json(stream: &mut TcpStream, status: u16, body: &Value) -> io::Result<()> {
    let mut w = Writer::start(stream, status, "application/json; charset=utf-8").await?;
    w.chunk(body.to_string().as_bytes()).await?;
    w.finish().await
}

async fn send_text(stream: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    let mut w = Writer::start(stream, status, "text/plain; charset=utf-8").await?;
    w.chunk(body.as_bytes()).await?;
    w.finish().await
}

async fn serve<F, Fut>(listener: TcpListener, handler: F) -> Result<(), String>
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = io::Result<()>> + Send + 'static,
{
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| format!("accept failed: {e}"))?;
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = h(stream).await
                && e.kind() != io::ErrorKind::BrokenPipe
                && e.kind() != io::ErrorKind::ConnectionReset
            {
                eprintln!("tc-fake-engine: connection: {e}");
            }
        });
    }
}

/// The n-th generated piece of text (one token).
fn token(n: u32) -> String {
    let w = WORDS[n as usize % WORDS.len()];
    if n == 0 { w.to_string() } else { format!(" {w}") }
}

/// Prompt tokens, roughly: words of every message.
fn prompt_tokens(body: &Value) -> u32 {
    let words = |v: &Value| v.as_str().map(|s| s.split_whitespace().count()).unwrap_or(0);
    let n: usize = match body["messages"].as_array() {
        Some(ms) => ms.iter().map(|m| words(&m["content"]) + 4).sum(),
        None => words(&body["prompt"]),
    };
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// Ollama's `format.HumanBytes2` (`o:format/bytes.go:52-63`).
fn human_bytes2(b: u64) -> String {
    let (gib, mib, kib) = (1u64 << 30, 1u64 << 20, 1u64 << 10);
    match b {
        b if b >= gib => format!("{:.1} GiB", b as f64 / gib as f64),
        b if b >= mib => format!("{:.1} MiB", b as f64 / mib as f64),
        b if b >= kib => format!("{:.1} KiB", b as f64 / kib as f64),
        b => format!("{b} B"),
    }
}

/// What Ollama 0.12.6's new engine logs when a model is loaded on the CPU: the runner's
/// `offloaded 0/N layers to GPU` (`o:ml/backend/ggml/ggml.go:492`) and the server's summary when
/// `Load` returns (`o:llm/server.go:669-673`, `o:ml/device.go:201-240`). The fake model has 18
/// blocks plus the output layer; its KV cache holds 18 KiB per token of context.
fn log_memory_account(weights: u64, ctx: u32) {
    let kv = u64::from(ctx) * 18 * 1024;
    let graph = 20u64 << 20;
    let at = now_rfc3339();
    println!("time={at} level=INFO source=ggml.go:492 msg=\"offloaded 0/19 layers to GPU\"");
    for (line, what, size) in [(211, "model weights", weights), (222, "kv cache", kv), (233, "compute graph", graph)] {
        println!(
            "time={at} level=INFO source=device.go:{line} msg=\"{what}\" device=CPU size=\"{}\"",
            human_bytes2(size)
        );
    }
    println!(
        "time={at} level=INFO source=device.go:238 msg=\"total memory\" size=\"{}\"",
        human_bytes2(weights + kv + graph)
    );
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

// ---------------------------------------------------------------------------------------------
// llama-server

struct Llama {
    args: LlamaArgs,
    rates: Rates,
    started: Instant,
    /// Generating requests seen so far.
    requests: std::sync::atomic::AtomicU64,
}

async fn llama_main(args: LlamaArgs, rates: Rates) -> Result<(), String> {
    if !args.model.is_file() {
        return Err(format!(
            "llama_model_load: error loading model: failed to open {}: No such file or directory",
            args.model.display()
        ));
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port)).await.map_err(|e| {
        format!("main: couldn't bind HTTP server socket, hostname: {}, port: {}: {e}", args.host, args.port)
    })?;
    println!("build: 0 (tc-fake-engine)");
    println!("llama_context: n_ctx = {}", args.ctx);
    println!("load_tensors: offloaded 0/19 layers to GPU");
    println!("main: server is listening on http://{}:{}", args.host, args.port);
    let st = Arc::new(Llama { args, rates, started: Instant::now(), requests: Default::default() });
    serve(listener, move |mut stream| {
        let st = Arc::clone(&st);
        async move {
            let Some(req) = read_request(&mut stream).await? else { return Ok(()) };
            llama_route(&st, &mut stream, req).await
        }
    })
    .await
}

async fn llama_route(st: &Llama, stream: &mut TcpStream, req: RecordedRequest) -> io::Result<()> {
    let loading = st.started.elapsed() < Duration::from_millis(st.rates.load_ms);
    let loading_body = json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}});
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/health" | "/v1/health") if loading => send_json(stream, 503, &loading_body).await,
        ("GET", "/health" | "/v1/health") => send_json(stream, 200, &json!({"status": "ok"})).await,
        (_, _) if loading => send_json(stream, 503, &loading_body).await,
        ("GET", "/props") => {
            let body = json!({
                "default_generation_settings": {"n_ctx": st.args.ctx / st.args.parallel.max(1)},
                "total_slots": st.args.parallel,
                "model_path": st.args.model.display().to_string(),
                "chat_template": "",
                "modalities": {"vision": false, "audio": false},
                "build_info": "b0-tc-fake-engine",
                "is_sleeping": false,
            });
            send_json(stream, 200, &body).await
        }
        ("GET", "/slots") => {
            let slots: Vec<Value> = (0..st.args.parallel)
                .map(|id| json!({"id": id, "id_task": -1, "n_ctx": st.args.ctx / st.args.parallel.max(1), "is_processing": false}))
                .collect();
            send_json(stream, 200, &Value::Array(slots)).await
        }
        ("POST", "/v1/chat/completions") => llama_chat(st, stream, &req).await,
        _ => {
            let body = json!({"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}});
            send_json(stream, 404, &body).await
        }
    }
}

async fn llama_chat(st: &Llama, stream: &mut TcpStream, req: &RecordedRequest) -> io::Result<()> {
    let Some(body) = req.json() else {
        let e = json!({"error": {"code": 400, "message": "Failed to parse the request body as JSON", "type": "invalid_request_error"}});
        return send_json(stream, 400, &e).await;
    };
    count_request(&st.requests, &st.rates);
    let n_prompt = prompt_tokens(&body);
    let n_ctx_slot = st.args.ctx / st.args.parallel.max(1);
    if n_prompt >= n_ctx_slot {
        let e = json!({"error": {"code": 400, "message": format!("request ({n_prompt} tokens) exceeds the available context size ({n_ctx_slot} tokens), try increasing it"), "type": "exceed_context_size_error"}});
        return send_json(stream, 400, &e).await;
    }
    let max = body["max_tokens"].as_u64().or(body["n_predict"].as_u64()).unwrap_or(128);
    let n = u32::try_from(max).unwrap_or(u32::MAX).min(n_ctx_slot - n_prompt);
    let model = body["model"].as_str().unwrap_or("model").to_string();
    let created = chrono::Utc::now().timestamp();
    let id = format!("chatcmpl-tcfake{created}");
    let chunk = |delta: Value, finish: Value| json!({"choices": [{"finish_reason": finish, "index": 0, "delta": delta}], "created": created, "id": id, "model": model, "system_fingerprint": "b0-tc-fake-engine", "object": "chat.completion.chunk"});
    let start = Instant::now();
    let prompt_ms = st.rates.prompt_ms as f64;
    let gap = 1.0 / st.rates.tps;
    let mut text = String::new();
    let streaming = body["stream"].as_bool().unwrap_or(false);
    let mut w = if streaming { Some(Writer::start(stream, 200, "text/event-stream").await?) } else { None };
    if let Some(w) = &mut w {
        w.chunk(format!("data: {}\n\n", chunk(json!({"role": "assistant", "content": null}), Value::Null)).as_bytes())
            .await?;
    }
    let first_at = start + Duration::from_millis(st.rates.prompt_ms);
    for k in 0..n {
        tokio::time::sleep_until(first_at + Duration::from_secs_f64(gap * f64::from(k))).await;
        let piece = token(k);
        if let Some(w) = &mut w {
            w.chunk(format!("data: {}\n\n", chunk(json!({"content": piece}), Value::Null)).as_bytes()).await?;
        }
        text.push_str(&piece);
    }
    let predicted_ms = gap * 1000.0 * f64::from(n.saturating_sub(1));
    let timings = json!({
        "cache_n": 0,
        "prompt_n": n_prompt,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / f64::from(n_prompt),
        "prompt_per_second": f64::from(n_prompt) / (prompt_ms.max(0.001) / 1000.0),
        "predicted_n": n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": if n > 1 { predicted_ms / f64::from(n - 1) } else { 0.0 },
        "predicted_per_second": st.rates.tps,
    });
    let usage = json!({"completion_tokens": n, "prompt_tokens": n_prompt, "total_tokens": n + n_prompt, "prompt_tokens_details": {"cached_tokens": 0}});
    match w {
        Some(mut w) => {
            let mut end = chunk(json!({}), json!("length"));
            end["timings"] = timings.clone();
            w.chunk(format!("data: {end}\n\n").as_bytes()).await?;
            let mut last = json!({"choices": [], "created": created, "id": id, "model": model, "object": "chat.completion.chunk", "usage": usage});
            last["timings"] = timings;
            w.chunk(format!("data: {last}\n\ndata: [DONE]\n\n").as_bytes()).await?;
            w.finish().await
        }
        None => {
            let body = json!({
                "choices": [{"finish_reason": "length", "index": 0, "message": {"role": "assistant", "content": text}}],
                "created": created, "id": id, "model": model, "object": "chat.completion",
                "usage": usage, "timings": timings,
            });
            send_json(stream, 200, &body).await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Ollama

struct Ollama {
    rates: Rates,
    store: PathBuf,
    /// Loaded models: full tag → context length.
    loaded: Mutex<BTreeMap<String, u32>>,
    /// Generating requests seen so far.
    requests: std::sync::atomic::AtomicU64,
}

fn ollama_addr() -> Result<(String, u16), String> {
    let raw = std::env::var("OLLAMA_HOST").unwrap_or_default();
    let raw = raw.trim();
    let raw = raw.strip_prefix("http://").unwrap_or(raw).trim_end_matches('/');
    if raw.is_empty() {
        return Ok(("127.0.0.1".into(), 11434));
    }
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("Error: invalid port in OLLAMA_HOST `{raw}`"))?),
        None => (raw, 11434),
    };
    Ok((if host.is_empty() { "127.0.0.1".into() } else { host.to_string() }, port))
}

fn ollama_store() -> PathBuf {
    match std::env::var_os("OLLAMA_MODELS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".ollama/models"),
    }
}

/// `name` → (`name`, `latest`); `name:tag` → (`name`, `tag`).
fn split_tag(tag: &str) -> (String, String) {
    match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
        _ => (tag.to_string(), "latest".to_string()),
    }
}

fn full_tag(tag: &str) -> String {
    let (n, t) = split_tag(tag);
    format!("{n}:{t}")
}

/// A stable fake sha256 digest (64 hex) for a tag: no hashing crate needed.
fn digest_of(tag: &str) -> String {
    let mut out = String::with_capacity(64);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0u64..4 {
        for b in tag.bytes().chain(round.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out
}

impl Ollama {
    fn manifest_path(&self, tag: &str) -> PathBuf {
        let (n, t) = split_tag(tag);
        self.store.join("manifests/registry.ollama.ai/library").join(n).join(t)
    }

    fn present(&self, tag: &str) -> bool {
        self.manifest_path(tag).is_file()
    }

    fn installed(&self) -> Vec<(String, u64, String)> {
        let root = self.store.join("manifests/registry.ollama.ai/library");
        let mut out = Vec::new();
        let Ok(names) = std::fs::read_dir(&root) else { return out };
        for n in names.flatten() {
            let Ok(tags) = std::fs::read_dir(n.path()) else { continue };
            for t in tags.flatten() {
                let tag = format!("{}:{}", n.file_name().to_string_lossy(), t.file_name().to_string_lossy());
                let text = std::fs::read_to_string(t.path()).unwrap_or_default();
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let size = v["size"].as_u64().unwrap_or(0);
                let modified = v["modified_at"].as_str().unwrap_or_default().to_string();
                out.push((tag, size, modified));
            }
        }
        out.sort();
        out
    }

    fn record(&self, tag: &str) -> io::Result<()> {
        let digest = digest_of(tag);
        let blobs = self.store.join("blobs");
        std::fs::create_dir_all(&blobs)?;
        // A sparse file of the model's size: the store holds "the model" without using the disk.
        let blob = std::fs::File::create(blobs.join(format!("sha256-{digest}")))?;
        blob.set_len(self.rates.model_bytes)?;
        let path = self.manifest_path(tag);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let manifest =
            json!({"schemaVersion": 2, "size": self.rates.model_bytes, "digest": digest, "modified_at": now_rfc3339()});
        std::fs::write(path, manifest.to_string())
    }
}

/// The tensor table `/api/show` lists (`{name, type, shape}`, `o:api/types.go:703-707`), in the
/// stand-in's Gemma 3 270M shapes: 262,144-row embeddings tied to the output and 18 blocks
/// (types simplified to Q8_0 and F32: the stand-in has no real file).
fn show_tensors() -> Value {
    let t = |name: String, ty: &str, shape: &[u64]| json!({"name": name, "type": ty, "shape": shape});
    let mut v =
        vec![t("token_embd.weight".into(), "Q8_0", &[640, 262_144]), t("output_norm.weight".into(), "F32", &[640])];
    for b in 0..18 {
        for (w, shape) in [
            ("attn_q", [640u64, 1024]),
            ("attn_k", [640, 256]),
            ("attn_v", [640, 256]),
            ("attn_output", [1024, 640]),
            ("ffn_gate", [640, 2048]),
            ("ffn_up", [640, 2048]),
            ("ffn_down", [2048, 640]),
        ] {
            v.push(t(format!("blk.{b}.{w}.weight"), "Q8_0", &shape));
        }
        for n in ["attn_norm", "ffn_norm"] {
            v.push(t(format!("blk.{b}.{n}.weight"), "F32", &[640]));
        }
    }
    Value::Array(v)
}

fn details() -> Value {
    json!({"parent_model": "", "format": "gguf", "family": "gemma3", "families": ["gemma3"], "parameter_size": "268.10M", "quantization_level": "Q4_K_M"})
}

async fn ollama_main(rates: Rates) -> Result<(), String> {
    let (host, port) = ollama_addr()?;
    let store = ollama_store();
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| format!("Error: listen tcp {host}:{port}: bind: {e}"))?;
    println!(
        "time={} level=INFO source=routes.go msg=\"Listening on {host}:{port} (version {})\"",
        now_rfc3339(),
        rates.ollama_version
    );
    println!("time={} level=INFO msg=\"models directory\" path={}", now_rfc3339(), store.display());
    let st = Arc::new(Ollama { rates, store, loaded: Mutex::new(BTreeMap::new()), requests: Default::default() });
    serve(listener, move |mut stream| {
        let st = Arc::clone(&st);
        async move {
            let Some(req) = read_request(&mut stream).await? else { return Ok(()) };
            ollama_route(&st, &mut stream, req).await
        }
    })
    .await
}

fn not_found(tag: &str) -> Value {
    json!({"error": format!("model '{tag}' not found")})
}

async fn ollama_route(st: &Ollama, stream: &mut TcpStream, req: RecordedRequest) -> io::Result<()> {
    let body = req.json().unwrap_or(Value::Null);
    let model = body["model"].as_str().or(body["name"].as_str()).unwrap_or_default().to_string();
    let needs_body =
        matches!(req.path.as_str(), "/api/show" | "/api/pull" | "/api/chat" | "/api/generate" | "/api/delete");
    if needs_body && req.body.is_empty() {
        return send_json(stream, 400, &json!({"error": "missing request body"})).await;
    }
    if needs_body && model.is_empty() {
        return send_json(stream, 400, &json!({"error": "model is required"})).await;
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET" | "HEAD", "/") => send_text(stream, 200, "Ollama is running").await,
        ("GET" | "HEAD", "/api/version") => send_json(stream, 200, &json!({"version": st.rates.ollama_version})).await,
        ("GET" | "HEAD", "/api/tags") => {
            let models: Vec<Value> = st
                .installed()
                .into_iter()
                .map(|(tag, size, modified)| json!({"name": tag, "model": tag, "modified_at": modified, "size": size, "digest": digest_of(&tag), "details": details()}))
                .collect();
            send_json(stream, 200, &json!({"models": models})).await
        }
        ("GET", "/api/ps") => {
            let expires =
                (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let loaded: Vec<(String, u32)> = match st.loaded.lock() {
                Ok(g) => g.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                Err(p) => p.into_inner().iter().map(|(k, v)| (k.clone(), *v)).collect(),
            };
            let size = st.rates.model_bytes + (64 << 20);
            let models: Vec<Value> = loaded
                .into_iter()
                .map(|(tag, ctx)| json!({"name": tag, "model": tag, "size": size, "digest": digest_of(&tag), "details": details(), "expires_at": expires, "size_vram": 0, "context_length": ctx}))
                .collect();
            send_json(stream, 200, &json!({"models": models})).await
        }
        ("POST", "/api/show") => {
            if !st.present(&model) {
                return send_json(stream, 404, &not_found(&model)).await;
            }
            let body = json!({
                "license": "", "modelfile": format!("FROM {model}\n"), "parameters": "", "template": "{{ .Prompt }}",
                "details": details(),
                // The file's key/value map without `general.name` and `tokenizer.chat_template`,
                // arrays over five elements emptied as without `verbose`, and the tensor table
                // (o:server/routes.go:1131-1139,1164-1170; engine-source-facts A4).
                "model_info": {
                    "general.architecture": "gemma3", "general.file_type": 15, "general.parameter_count": 268_098_176u64,
                    "gemma3.block_count": 18, "gemma3.context_length": 32768, "gemma3.embedding_length": 640,
                    "gemma3.attention.head_count": 4, "gemma3.attention.head_count_kv": 1,
                    "gemma3.attention.key_length": 256, "gemma3.attention.value_length": 256,
                    "tokenizer.ggml.tokens": [], "tokenizer.ggml.scores": [], "tokenizer.ggml.token_type": [],
                },
                "tensors": show_tensors(),
                "capabilities": ["completion"],
                "modified_at": now_rfc3339(),
            });
            send_json(stream, 200, &body).await
        }
        ("POST", "/api/pull") => ollama_pull(st, stream, &model, body["stream"].as_bool().unwrap_or(true)).await,
        ("POST", "/api/chat" | "/api/generate") => ollama_generate(st, stream, &req.path, &model, &body).await,
        ("DELETE", "/api/delete") => {
            if !st.present(&model) {
                return send_json(stream, 404, &json!({"error": format!("model '{model}' not found")})).await;
            }
            let _ = std::fs::remove_file(st.manifest_path(&model));
            send_json(stream, 200, &json!({})).await
        }
        _ => send_text(stream, 404, "404 page not found").await,
    }
}

async fn ollama_pull(st: &Ollama, stream: &mut TcpStream, model: &str, streaming: bool) -> io::Result<()> {
    let line = |v: Value| format!("{v}\n");
    if !streaming {
        // `"stream": false`: one answer at the end, errors with HTTP 500 (`waitForStream`).
        if model.contains("does-not-exist") {
            return send_json(stream, 500, &json!({"error": "pull model manifest: file does not exist"})).await;
        }
        let secs = st.rates.model_bytes as f64 / st.rates.pull_bps;
        if !st.present(model) {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
        st.record(model)?;
        return send_json(stream, 200, &json!({"status": "success"})).await;
    }
    let mut w = Writer::start(stream, 200, "application/x-ndjson").await?;
    w.chunk(line(json!({"status": "pulling manifest"})).as_bytes()).await?;
    if model.contains("does-not-exist") {
        w.chunk(line(json!({"error": "pull model manifest: file does not exist"})).as_bytes()).await?;
        return w.finish().await;
    }
    let digest = digest_of(model);
    let status = format!("pulling {}", &digest[..12]);
    let total = st.rates.model_bytes;
    if st.present(model) {
        // A blob already present is reported at once with completed == total.
        w.chunk(
            line(json!({"status": status, "digest": format!("sha256:{digest}"), "total": total, "completed": total}))
                .as_bytes(),
        )
        .await?;
    } else {
        let start = Instant::now();
        let step = Duration::from_millis(60);
        loop {
            let done = ((start.elapsed().as_secs_f64() * st.rates.pull_bps) as u64).min(total);
            let mut v = json!({"status": status, "digest": format!("sha256:{digest}"), "total": total});
            if done > 0 {
                v["completed"] = json!(done);
            }
            w.chunk(line(v).as_bytes()).await?;
            if done >= total {
                break;
            }
            tokio::time::sleep(step).await;
        }
    }
    w.chunk(line(json!({"status": "verifying sha256 digest"})).as_bytes()).await?;
    // Ollama hashes the new blobs without a word (o:server/images.go:668-687).
    tokio::time::sleep(Duration::from_millis(st.rates.verify_ms)).await;
    w.chunk(line(json!({"status": "writing manifest"})).as_bytes()).await?;
    if let Err(e) = st.record(model) {
        w.chunk(line(json!({"error": format!("write manifest: {e}")})).as_bytes()).await?;
        return w.finish().await;
    }
    w.chunk(line(json!({"status": "success"})).as_bytes()).await?;
    w.finish().await
}

async fn ollama_generate(st: &Ollama, stream: &mut TcpStream, path: &str, model: &str, body: &Value) -> io::Result<()> {
    let chat = path == "/api/chat";
    if !st.present(model) {
        return send_json(stream, 404, &not_found(model)).await;
    }
    let request_start = Instant::now();
    let tag = full_tag(model);
    let ctx = u32::try_from(body["options"]["num_ctx"].as_u64().unwrap_or(4096)).unwrap_or(4096);
    let unload = body["keep_alive"].as_i64() == Some(0) || body["keep_alive"].as_str() == Some("0");
    let empty = if chat {
        body["messages"].as_array().is_none_or(|m| m.is_empty())
    } else {
        body["prompt"].as_str().is_none_or(str::is_empty)
    };
    let was_loaded = {
        let mut g = match st.loaded.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if unload && empty {
            g.remove(&tag);
            true
        } else {
            g.insert(tag.clone(), ctx).is_some()
        }
    };
    let created = now_rfc3339();
    let base = |v: &mut Value| {
        v["model"] = json!(model);
        v["created_at"] = json!(created);
    };
    if empty {
        let mut v = json!({"done": true, "done_reason": if unload { "unload" } else { "load" }});
        base(&mut v);
        if chat {
            v["message"] = json!({"role": "assistant", "content": ""});
        } else {
            v["response"] = json!("");
        }
        return send_json(stream, 200, &v).await;
    }
    let nth = count_request(&st.requests, &st.rates);
    if let Some((n, kind)) = &st.rates.fail_request
        && *n == nth
        && let Some((status, text)) = ollama_failure(kind)
    {
        // Before the first chunk Ollama answers a plain error body (o:server/routes.go:2259-2271).
        return send_json(stream, status, &json!({"error": text})).await;
    }
    // A cold model takes the load time once, as Ollama's scheduler would.
    let load = if was_loaded { Duration::ZERO } else { Duration::from_millis(st.rates.load_ms) };
    tokio::time::sleep(load).await;
    if !was_loaded {
        log_memory_account(st.rates.model_bytes, ctx);
    }
    let n_prompt = prompt_tokens(body);
    let n = u32::try_from(body["options"]["num_predict"].as_i64().filter(|n| *n > 0).unwrap_or(128)).unwrap_or(128);
    let gap = 1.0 / st.rates.tps;
    let streaming = body["stream"].as_bool().unwrap_or(true);
    let piece = |text: &str| {
        let mut v = json!({"done": false});
        base(&mut v);
        if chat {
            v["message"] = json!({"role": "assistant", "content": text});
        } else {
            v["response"] = json!(text);
        }
        v
    };
    let mut w = if streaming { Some(Writer::start(stream, 200, "application/x-ndjson").await?) } else { None };
    let prefill_end = Instant::now() + Duration::from_millis(st.rates.prompt_ms);
    let mut text = String::new();
    for k in 0..n {
        tokio::time::sleep_until(prefill_end + Duration::from_secs_f64(gap * f64::from(k))).await;
        let t = token(k);
        if let Some(w) = &mut w {
            w.chunk(format!("{}\n", piece(&t)).as_bytes()).await?;
        }
        text.push_str(&t);
    }
    let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let eval_ns = ns(Duration::from_secs_f64(gap * f64::from(n)));
    let mut last = json!({
        "done": true,
        "done_reason": "length",
        "total_duration": ns(request_start.elapsed()),
        "load_duration": ns(load).max(1),
        "prompt_eval_count": n_prompt,
        "prompt_eval_duration": ns(Duration::from_millis(st.rates.prompt_ms)).max(1),
        "eval_count": n,
        "eval_duration": eval_ns.max(1),
    });
    base(&mut last);
    let final_text = if streaming { String::new() } else { text };
    if chat {
        last["message"] = json!({"role": "assistant", "content": final_text});
    } else {
        last["response"] = json!(final_text);
    }
    match w {
        Some(mut w) => {
            w.chunk(format!("{last}\n").as_bytes()).await?;
            w.finish().await
        }
        None => send_json(stream, 200, &last).await,
    }
}
