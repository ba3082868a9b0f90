//! Tests of the Ollama client against a scripted fake server.

use super::*;
use crate::engine::GenRequest;
use serde_json::{Value, json};
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
        (MS, json!({"status": "pulling 6a0746a1ec1a", "digest": digest, "total": 2142590208u64, "completed": 241970})),
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
    assert_eq!(seen[0], PullProgress { status: "pulling manifest".into(), digest: None, total: None, completed: None });
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
async fn a_long_silent_verification_is_not_a_stall() {
    // Ollama says `verifying sha256 digest` once, then hashes the blobs without a word
    // (o:server/images.go:668-689). Here: a 1 MB blob, a 100 ms stall limit and a 1 MB/s disk,
    // so verifying may take 100 ms + 1 s; it takes 600 ms, six stall limits.
    let layer = |done: u64| json!({"status": "pulling aabbccddeeff", "digest": "sha256:aabbccddeeff", "total": 1_000_000, "completed": done});
    let lines = |verify: Duration| {
        vec![
            (MS, json!({"status": "pulling manifest"})),
            (MS, layer(500_000)),
            (MS, layer(1_000_000)),
            (MS, json!({"status": "verifying sha256 digest"})),
            (verify, json!({"status": "writing manifest"})),
            (MS, json!({"status": "success"})),
        ]
    };
    let (_s, client) = server(vec![Route::ndjson("POST", "/api/pull", lines(Duration::from_millis(600)))]).await;
    let client = client.with_pull_stall(Duration::from_millis(100)).with_verify_rate(1e6);
    let outcome = client.pull("m", |_| {}).await.unwrap();
    assert_eq!(outcome.total_bytes, 1_000_000);

    // Past the extended limit it is still a stall, reported with the limit that applied.
    let (_s, client) = server(vec![Route::ndjson("POST", "/api/pull", lines(Duration::from_secs(5)))]).await;
    let client = client.with_pull_stall(Duration::from_millis(100)).with_verify_rate(1e6);
    let err = client.pull("m", |_| {}).await.unwrap_err();
    assert_eq!(err, EngineError::Timeout(Duration::from_millis(1100)));

    // The same silence while downloading is a stall at the plain limit.
    let silent_download = vec![(MS, layer(500_000)), (Duration::from_millis(600), layer(1_000_000))];
    let (_s, client) = server(vec![Route::ndjson("POST", "/api/pull", silent_download)]).await;
    let client = client.with_pull_stall(Duration::from_millis(100)).with_verify_rate(1e6);
    assert_eq!(client.pull("m", |_| {}).await.unwrap_err(), EngineError::Timeout(Duration::from_millis(100)));
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
    let done = json!({"model": "m", "created_at": "x", "message": {"role": "assistant", "content": ""}, "done": true});
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
    assert_eq!(m.processor(), "100% GPU");

    let partial = PsModel { size: 1000, size_vram: 520, ..Default::default() };
    assert_eq!(partial.processor(), "48%/52% CPU/GPU");
    let cpu = PsModel { size: 1000, ..Default::default() };
    assert_eq!(cpu.processor(), "100% CPU");
    // Before v0.9.7 there is no context_length.
    let old = json!({"models": [{"name": "a", "model": "a", "size": 1, "size_vram": 0, "digest": "d", "expires_at": "0001-01-01T00:00:00Z"}]});
    let (_s, client) = server(vec![Route::json("GET", "/api/ps", 200, &old)]).await;
    assert_eq!(client.ps().await.unwrap()[0].context_length, None);
}

#[tokio::test]
async fn show_reads_details_model_info_and_kv_size() {
    let body: Value = serde_json::from_str(r##"{"modelfile":"# Modelfile","parameters":"num_keep 24\nstop \"<|eot_id|>\"","template":"{{ .Prompt }}","details":{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"8.0B","quantization_level":"Q4_0"},"model_info":{"general.architecture":"llama","general.file_type":2,"general.parameter_count":8030261248,"general.quantization_version":2,"llama.attention.head_count":32,"llama.attention.head_count_kv":8,"llama.attention.layer_norm_rms_epsilon":0.00001,"llama.block_count":32,"llama.context_length":8192,"llama.embedding_length":4096,"llama.feed_forward_length":14336,"llama.rope.dimension_count":128,"llama.rope.freq_base":500000,"llama.vocab_size":128256,"tokenizer.ggml.tokens":[],"tokenizer.ggml.merges":[]},"tensors":[{"name":"token_embd.weight","type":"Q4_K","shape":[4096,128256]}],"capabilities":["completion"],"modified_at":"2024-05-14T09:36:38.000Z"}"##).unwrap();
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
    assert_eq!(
        info.tensors,
        vec![ShowTensor { name: "token_embd.weight".into(), ggml_type: "Q4_K".into(), shape: vec![4096, 128256] }]
    );
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
async fn version_health_and_tags() {
    let tags = json!({"models": [{"name": "llama3:latest", "model": "llama3:latest", "modified_at": "2024-05-14T09:36:38Z",
        "size": 4661224676u64, "digest": "365c0bd3c000", "details": {"format": "gguf", "family": "llama",
        "parameter_size": "8.0B", "quantization_level": "Q4_0"}}]});
    let (_server, client) = server(vec![
        Route::json("GET", "/api/version", 200, &json!({"version": "0.5.1"})),
        Route::text("GET", "/", 200, "Ollama is running"),
        Route::json("GET", "/api/tags", 200, &tags),
    ])
    .await;
    assert_eq!(client.version().await.unwrap(), "0.5.1");
    assert!(client.healthy().await);
    assert!(client.has_model("llama3").await.unwrap());
    assert!(client.has_model("llama3:latest").await.unwrap());
    assert!(!client.has_model("llama3:70b").await.unwrap());
    assert_eq!(client.list().await.unwrap()[0].size, 4661224676);
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
