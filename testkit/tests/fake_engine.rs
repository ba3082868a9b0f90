//! The fixed-rate fake engine held to what the project's real engine clients expect: the
//! behaviours the cycle tests do not reach (loading, errors, a store shared by two servers).

use host::engine::{EngineError, GenRequest};
use host::ollama::OllamaClient;
use host::openai::{Health, OpenAiClient};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the fixture when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This package's own binary, as cargo built it for this test.
fn fake_engine() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_tc-fake-engine"))
}

fn free_port() -> u16 {
    host::process::free_port().expect("free port")
}

fn request(prompt: &str, max_tokens: u32) -> GenRequest {
    GenRequest {
        model: "fake:1b".into(),
        system: None,
        prompt: prompt.into(),
        max_tokens,
        temperature: 0.0,
        seed: 1,
        context: Some(1024),
        options: Default::default(),
        timeout: Duration::from_secs(30),
        stall: None,
    }
}

#[test]
fn as_llama_server_it_loads_then_streams_at_its_rate_and_refuses_an_overlong_prompt() {
    let gguf = tempfile::NamedTempFile::new().expect("model file");
    let port = free_port();
    let _engine = Running(
        Command::new(fake_engine())
            .args(["--model", &gguf.path().display().to_string(), "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["-c", "64", "-np", "1", "--metrics", "--no-webui", "-t", "1"])
            .env("TC_FAKE_LOAD_MS", "600")
            .env("TC_FAKE_TPS", "100")
            .stdout(Stdio::null())
            .spawn()
            .expect("start tc-fake-engine"),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let c = OpenAiClient::new(&format!("http://127.0.0.1:{port}"));
        let start = Instant::now();
        let mut saw_loading = false;
        loop {
            match c.health().await {
                Ok(Health::Ready) => break,
                Ok(Health::Loading) => saw_loading = true,
                Err(_) => {}
            }
            assert!(start.elapsed() < Duration::from_secs(20), "never healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(saw_loading, "/health never answered 503 Loading model during TC_FAKE_LOAD_MS");
        assert!(start.elapsed() >= Duration::from_millis(500), "ready after {:?}", start.elapsed());

        let g = c.generate_stream(&request("Say hello.", 21)).await.expect("generation");
        assert_eq!(g.output_tokens, Some(21));
        assert_eq!(g.chunk_times.len(), 21);
        assert_eq!(g.engine_decode_tps, Some(100.0));
        assert_eq!(g.finish_reason.as_deref(), Some("length"));
        // 20 gaps of 10 ms after the first token.
        let decode = g.e2e.saturating_sub(g.ttft);
        assert!(decode >= Duration::from_millis(190) && decode < Duration::from_millis(600), "decode took {decode:?}");

        let long = "word ".repeat(200);
        match c.generate_stream(&request(&long, 4)).await {
            Err(EngineError::Http { status: 400, message }) => {
                assert!(message.contains("exceeds the available context size"), "{message}")
            }
            other => panic!("expected a context-size refusal, got {other:?}"),
        }
    });
}

#[test]
fn as_ollama_a_pull_is_seen_by_a_later_server_and_an_unknown_tag_fails_with_ollamas_text() {
    let store = tempfile::tempdir().expect("store");
    let start_server = |port: u16| {
        Running(
            Command::new(fake_engine())
                .arg("serve")
                .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
                .env("OLLAMA_MODELS", store.path())
                .env("TC_FAKE_MODEL_BYTES", "3000000")
                .env("TC_FAKE_PULL_BPS", "10000000")
                .stdout(Stdio::null())
                .spawn()
                .expect("start tc-fake-engine serve"),
        )
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let ready = |c: OllamaClient| async move {
        let start = Instant::now();
        while !c.healthy().await {
            assert!(start.elapsed() < Duration::from_secs(20), "GET / never said Ollama is running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c
    };
    let port = free_port();
    let first = start_server(port);
    rt.block_on(async {
        let c = ready(OllamaClient::new(&format!("http://127.0.0.1:{port}"))).await;
        assert!(!c.has_model("fake:1b").await.expect("tags"));
        match c.generate_stream(&request("hi", 3)).await {
            Err(EngineError::Http { status: 404, message }) => assert_eq!(message, "model 'fake:1b' not found"),
            other => panic!("expected 404 for a model not pulled, got {other:?}"),
        }
        let mut lines = 0;
        let pulled = c.pull("fake:1b", |_| lines += 1).await.expect("pull");
        assert_eq!(pulled.total_bytes, 3_000_000);
        assert!(pulled.elapsed >= Duration::from_millis(250), "3 MB at 10 MB/s took {:?}", pulled.elapsed);
        assert!(lines >= 6, "{lines} progress lines");
        match c.pull("nope-does-not-exist:1b", |_| {}).await {
            Err(EngineError::InStream { message }) => assert_eq!(message, "pull model manifest: file does not exist"),
            other => panic!("expected Ollama's in-stream pull error, got {other:?}"),
        }
    });
    drop(first);
    let port = free_port();
    let _second = start_server(port);
    rt.block_on(async {
        let c = ready(OllamaClient::new(&format!("http://127.0.0.1:{port}"))).await;
        assert!(c.has_model("fake:1b").await.expect("tags"), "a later server does not see the pulled model");
        assert_eq!(c.version().await.expect("version"), "0.12.6");
        let show = c.show("fake:1b").await.expect("show");
        assert_eq!(show.quantization_level.as_deref(), Some("Q4_K_M"));
        assert!(show.kv_bytes_per_token_f16().is_some_and(|b| b > 0));
        let g = c.generate_stream(&request("hi", 5)).await.expect("chat");
        assert_eq!(g.output_tokens, Some(5));
        assert_eq!(g.text.split_whitespace().count(), 5);
        let ps = c.ps().await.expect("ps");
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].name, "fake:1b");
        assert_eq!(ps[0].context_length, Some(1024));
        assert_eq!(ps[0].processor(), "100% CPU");
    });
}

#[test]
fn as_ollama_a_failing_request_answers_ollamas_memory_error_bodies() {
    // Ollama 0.12.6's texts, word for word (o:llm/server.go:541, :815, :1497; o:server/sched.go:67).
    let cases = [
        ("system-memory", 500, "model requires more system memory (38.2 GiB) than is available (30.1 GiB)"),
        ("layout", 500, "memory layout cannot be allocated"),
        (
            "runner-stopped",
            500,
            "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, check ollama server logs for details",
        ),
        ("busy", 503, "server busy, please try again.  maximum pending requests exceeded"),
    ];
    let store = tempfile::tempdir().expect("store");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for (kind, status, text) in cases {
        let port = free_port();
        let _server = Running(
            Command::new(fake_engine())
                .arg("serve")
                .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
                .env("OLLAMA_MODELS", store.path())
                .env("TC_FAKE_MODEL_BYTES", "1000000")
                .env("TC_FAKE_FAIL_REQUEST", format!("2:{kind}"))
                .stdout(Stdio::null())
                .spawn()
                .expect("start tc-fake-engine serve"),
        );
        rt.block_on(async {
            let c = OllamaClient::new(&format!("http://127.0.0.1:{port}"));
            let start = Instant::now();
            while !c.healthy().await {
                assert!(start.elapsed() < Duration::from_secs(20), "GET / never said Ollama is running");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !c.has_model("fake:1b").await.expect("tags") {
                c.pull("fake:1b", |_| {}).await.expect("pull");
            }
            // The first request answers, the second fails once, the third answers again.
            assert_eq!(c.generate_stream(&request("hi", 2)).await.expect("first").output_tokens, Some(2));
            match c.generate_stream(&request("hi", 2)).await {
                Err(EngineError::Http { status: s, message }) => {
                    assert_eq!((s, message.as_str()), (status, text), "{kind}");
                }
                other => panic!("{kind}: expected HTTP {status} `{text}`, got {other:?}"),
            }
            assert_eq!(c.generate_stream(&request("hi", 2)).await.expect("third").output_tokens, Some(2));
        });
    }
}

#[test]
fn a_scripted_crash_exits_on_the_nth_generating_request_unanswered() {
    let gguf = tempfile::NamedTempFile::new().expect("model file");
    let port = free_port();
    let mut engine = Running(
        Command::new(fake_engine())
            .args(["--model", &gguf.path().display().to_string(), "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["-c", "256", "-np", "1"])
            .env("TC_FAKE_TPS", "500")
            .env("TC_FAKE_CRASH_REQUEST", "2")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tc-fake-engine"),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let c = OpenAiClient::new(&format!("http://127.0.0.1:{port}"));
        let start = Instant::now();
        while !matches!(c.health().await, Ok(Health::Ready)) {
            assert!(start.elapsed() < Duration::from_secs(20), "never healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let g = c.generate_stream(&request("Say hello.", 5)).await.expect("the first request is answered");
        assert_eq!(g.output_tokens, Some(5));
        let second = c.generate_stream(&request("Say hello again.", 5)).await;
        assert!(second.is_err(), "the second request must fail: {second:?}");
    });
    let status = engine.0.wait().expect("wait");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut engine.0.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert!(err.contains("crashing on generating request 2 (TC_FAKE_CRASH_REQUEST)"), "{err}");
}
