//! Mutation fuzzing with counts for what engines and Docker send the host adapters: llama-server's
//! SSE stream, Ollama's NDJSON chat and pull streams, Ollama's JSON replies (`/api/ps`,
//! `/api/show`, `/api/tags`) — each served over real HTTP by `testkit::fake_http` to the real
//! clients — and Docker's stats JSON. Each class prints `FUZZ class=… inputs=… panics=0`;
//! `bench/fuzz.sh` runs 10,000 inputs per class (`FUZZ_CASES`), `cargo test` a few hundred.

use host::engine::GenRequest;
use host::ollama::OllamaClient;
use host::openai::OpenAiClient;
use std::time::Duration;
use testkit::fake_http::{FakeServer, Route, TokenStream};
use testkit::mutate::{cases, run};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime")
}

fn request() -> GenRequest {
    GenRequest {
        model: "m".into(),
        system: None,
        prompt: "p".into(),
        max_tokens: 64,
        temperature: 0.0,
        seed: 1,
        context: Some(512),
        options: Default::default(),
        timeout: Duration::from_secs(10),
        stall: Some(Duration::from_secs(5)),
    }
}

fn bodies(chunks: Vec<(Duration, Vec<u8>)>) -> Vec<u8> {
    chunks.into_iter().flat_map(|(_, b)| b).collect()
}

/// Serves `body` once at `method path` and runs `call` against the server's URL.
fn served<T>(
    rt: &tokio::runtime::Runtime,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
    call: impl AsyncFnOnce(String) -> T,
) -> T {
    rt.block_on(async {
        let route = Route::stream(method, path, 200, ctype, vec![(Duration::ZERO, body.to_vec())]);
        let server = FakeServer::start(vec![route]).await.expect("fake server");
        call(server.url()).await
    })
}

fn stream(n: usize) -> TokenStream {
    let mut s = TokenStream::numbered("m", n, Duration::ZERO, 0.0);
    s.load = Duration::from_millis(120);
    s
}

#[test]
fn fuzz_llama_server_sse_stream() {
    let rt = runtime();
    let samples = vec![bodies(stream(3).openai_sse()), bodies(stream(12).openai_sse())];
    let t = run("openai-sse", &samples, cases(200), |body| {
        served(&rt, "POST", "/v1/chat/completions", "text/event-stream", body, async |url| {
            OpenAiClient::new(&url).generate_stream(&request()).await.is_ok()
        })
    });
    t.report();
}

#[test]
fn fuzz_ollama_chat_ndjson_stream() {
    let rt = runtime();
    let samples = vec![bodies(stream(3).ollama_chat_ndjson()), bodies(stream(12).ollama_chat_ndjson())];
    let t = run("ollama-chat-ndjson", &samples, cases(200), |body| {
        served(&rt, "POST", "/api/chat", "application/x-ndjson", body, async |url| {
            OllamaClient::new(&url).generate_stream(&request()).await.is_ok()
        })
    });
    t.report();
}

#[test]
fn fuzz_ollama_pull_ndjson_stream() {
    let rt = runtime();
    let digest = format!("sha256:{}", "6a".repeat(32));
    let lines = [
        r#"{"status":"pulling manifest"}"#.to_string(),
        format!(r#"{{"status":"pulling 6a0746a1ec1a","digest":"{digest}","total":19052049728}}"#),
        format!(r#"{{"status":"pulling 6a0746a1ec1a","digest":"{digest}","total":19052049728,"completed":1048576}}"#),
        format!(
            r#"{{"status":"pulling 6a0746a1ec1a","digest":"{digest}","total":19052049728,"completed":19052049728}}"#
        ),
        r#"{"status":"verifying sha256 digest"}"#.to_string(),
        r#"{"status":"writing manifest"}"#.to_string(),
        r#"{"status":"success"}"#.to_string(),
    ];
    let ok = lines.join("\n") + "\n";
    let failed = format!("{}\n{}\n", lines[0], r#"{"error":"pull model manifest: file does not exist"}"#);
    let samples = vec![ok.into_bytes(), failed.into_bytes()];
    let t = run("ollama-pull-ndjson", &samples, cases(200), |body| {
        served(&rt, "POST", "/api/pull", "application/x-ndjson", body, async |url| {
            OllamaClient::new(&url).pull("codellama:34b", |_| {}).await.is_ok()
        })
    });
    t.report();
}

#[test]
fn fuzz_ollama_json_replies() {
    let rt = runtime();
    let details = r#"{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"34B","quantization_level":"Q4_0"}"#;
    let ps = format!(
        r#"{{"models":[{{"name":"codellama:34b","model":"codellama:34b","size":21983617024,"digest":"{}","details":{details},"expires_at":"2025-10-17T23:19:07.414671Z","size_vram":16106127360,"context_length":4096}}]}}"#,
        "ab".repeat(32)
    );
    let tags = format!(
        r#"{{"models":[{{"name":"codellama:34b","model":"codellama:34b","modified_at":"2025-10-17T23:14:07.414671Z","size":19052049728,"digest":"{}","details":{details}}}]}}"#,
        "ab".repeat(32)
    );
    let show = format!(
        r#"{{"license":"…","modelfile":"FROM x","parameters":"stop \"[INST]\"","template":"{{{{ .Prompt }}}}","details":{details},"model_info":{{"general.architecture":"llama","general.parameter_count":33743970304,"llama.block_count":48,"llama.context_length":16384,"llama.embedding_length":8192,"llama.attention.head_count":64,"llama.attention.head_count_kv":8}},"capabilities":["completion"],"modified_at":"2025-10-17T23:14:07.414671Z"}}"#
    );
    for (class, path, method, sample) in [
        ("ollama-ps-json", "/api/ps", "GET", ps),
        ("ollama-tags-json", "/api/tags", "GET", tags),
        ("ollama-show-json", "/api/show", "POST", show),
    ] {
        let t = run(class, &[sample.into_bytes()], cases(200), |body| {
            served(&rt, method, path, "application/json; charset=utf-8", body, async |url| {
                let c = OllamaClient::new(&url);
                match path {
                    "/api/ps" => c.ps().await.is_ok(),
                    "/api/tags" => c.list().await.is_ok(),
                    _ => c.show("codellama:34b").await.is_ok(),
                }
            })
        });
        t.report();
    }
}

#[test]
fn fuzz_docker_stats_json() {
    let v2 = r#"{"read":"2025-10-17T23:14:07.414671Z","preread":"2025-10-17T23:14:06.414671Z","num_procs":0,
        "pids_stats":{"current":12,"limit":4915},
        "cpu_stats":{"cpu_usage":{"total_usage":81234567000,"usage_in_kernelmode":1234567000,"usage_in_usermode":80000000000},"system_cpu_usage":912345670000000,"online_cpus":16,"throttling_data":{"periods":0,"throttled_periods":0,"throttled_time":0}},
        "precpu_stats":{"cpu_usage":{"total_usage":80234567000,"usage_in_kernelmode":1234567000,"usage_in_usermode":79000000000},"system_cpu_usage":912329670000000,"online_cpus":16,"throttling_data":{"periods":0,"throttled_periods":0,"throttled_time":0}},
        "memory_stats":{"usage":22548578304,"stats":{"active_anon":21474836480,"active_file":536870912,"anon":21474836480,"file":1073741824,"inactive_file":536870912,"shmem":0},"limit":30064771072},
        "name":"/tc-codellama","id":"0123456789ab","networks":{"eth0":{"rx_bytes":1000,"rx_packets":10,"rx_errors":0,"rx_dropped":0,"tx_bytes":2000,"tx_packets":20,"tx_errors":0,"tx_dropped":0}}}"#;
    let v1 = v2.replace(
        r#""stats":{"active_anon""#,
        r#""max_usage":23548578304,"stats":{"cache":1073741824,"total_inactive_file":536870912,"active_anon""#,
    );
    let samples = vec![v2.as_bytes().to_vec(), v1.into_bytes()];
    let t = run("docker-stats-json", &samples, cases(300), |body| {
        match serde_json::from_slice::<bollard::models::ContainerStatsResponse>(body) {
            Ok(r) => {
                let s = host::docker::ContainerStats::from_response(&r);
                assert!(s.cpu_percent.is_finite() && s.cpu_percent >= 0.0, "CPU share out of range: {s:?}");
                true
            }
            Err(_) => false,
        }
    });
    t.report();
}
