//! llama-bench's standard test, run through the engine that was just measured: `pp<N>` (prefill
//! of an N-token prompt) and `tg<M>` (M tokens generated from an empty context).
//!
//! `llama-bench` times these two workloads straight on the library (`test_prompt`: a batch of
//! N tokens, the first one BOS, decoded at once; `test_gen`: M single-token decodes, in
//! `tools/llama-bench/llama-bench.cpp`). Through a server the same workloads are one request
//! each, and the server's own counters time them without the HTTP around them:
//!
//! - **llama-server**: `POST /completion` takes the prompt as an array of token ids, so the
//!   prefill test sends exactly N tokens (ids from the engine's own `/tokenize` of a filler text,
//!   repeated) with `cache_prompt: false`, and the decode test sends one token with
//!   `n_predict: M` and `ignore_eos: true`; `timings.prompt_per_second` and
//!   `timings.predicted_per_second` are the figures (`tools/server/server-common.cpp`, the
//!   `timings` object).
//! - **Ollama**: `/api/generate` with `raw: true` takes text only, so the prefill prompt is sized
//!   from the count the engine reports for a first, untimed request and every repetition starts
//!   with a different word, so no repetition is served from the prompt cache
//!   (`prompt_eval_count` counts cached tokens too, `o:runner/ollamarunner/runner.go:181`). The
//!   figures are `prompt_eval_count / prompt_eval_duration` and `eval_count / eval_duration`, the
//!   rates `ollama run --verbose` prints (durations in ns, `o:docs/api.md:26`). Ollama has no
//!   `ignore_eos`: a model that stops early is reported with the tokens it generated.

use crate::engine::{EngineError, http_client};
use protocol::results::{StandardResult, StandardRun};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardSpec {
    /// Prompt tokens of the prefill test.
    pub prompt_tokens: u32,
    /// Generated tokens of the decode test.
    pub gen_tokens: u32,
    /// Repetitions of each test.
    pub repetitions: u32,
    /// Limit for one request.
    pub timeout: Duration,
    /// Sampling seed.
    pub seed: u64,
}

/// English filler the prompts are made of (its content does not change the speed).
const FILLER: &str = "The quick brown fox jumps over the lazy dog while the homelab server hums in the corner, \
its fans turning slowly as the model answers questions about memory, bandwidth and the price of electricity. ";

/// Names the test as llama-bench does.
fn run(test: String, tokens: u32, tps: Vec<f64>) -> StandardRun {
    StandardRun { test, tokens, tps }
}

async fn post(base: &str, path: &str, body: &Value, timeout: Duration) -> Result<Value, EngineError> {
    let url = format!("{base}{path}");
    let r = http_client().post(&url).json(body).timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            EngineError::Timeout(timeout)
        } else {
            EngineError::Unreachable { url: base.to_string(), reason: e.to_string() }
        }
    })?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| EngineError::Protocol(format!("{path}: reading the answer: {e}")))?;
    if status != 200 {
        return Err(EngineError::Http { status, message: crate::openai::error_text(&text) });
    }
    serde_json::from_str(&text).map_err(|e| EngineError::Protocol(format!("{path}: the answer is not JSON: {e}")))
}

fn field_f64(v: &Value, path: &str, key: &str) -> Result<f64, EngineError> {
    v.get(key)
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| EngineError::Protocol(format!("{path}: no number `{key}` in the answer")))
}

/// The standard test on llama-server at `base`.
pub async fn llama_server(base: &str, spec: &StandardSpec) -> Result<StandardResult, EngineError> {
    let base = base.trim_end_matches('/');
    let tok = post(base, "/tokenize", &json!({ "content": FILLER, "add_special": false }), spec.timeout).await?;
    let ids: Vec<i64> = tok
        .get("tokens")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return Err(EngineError::Protocol("/tokenize: no tokens for the filler text".into()));
    }
    let n = spec.prompt_tokens as usize;
    let mut pp = Vec::new();
    let mut pp_tokens = 0;
    for rep in 0..spec.repetitions as usize {
        // Each repetition starts elsewhere in the filler: a different prompt every time.
        let prompt: Vec<i64> = ids.iter().cycle().skip(rep % ids.len()).take(n).copied().collect();
        let body = json!({
            "prompt": prompt, "n_predict": 1, "cache_prompt": false, "temperature": 0.0, "seed": spec.seed,
        });
        let v = post(base, "/completion", &body, spec.timeout).await?;
        let t =
            v.get("timings").ok_or_else(|| EngineError::Protocol("/completion: no `timings` in the answer".into()))?;
        pp_tokens = field_f64(t, "/completion", "prompt_n")? as u32;
        pp.push(field_f64(t, "/completion", "prompt_per_second")?);
    }
    let mut tg = Vec::new();
    let mut tg_tokens = 0;
    for rep in 0..spec.repetitions as usize {
        let body = json!({
            "prompt": [ids[rep % ids.len()]], "n_predict": spec.gen_tokens, "ignore_eos": true,
            "cache_prompt": false, "temperature": 0.0, "seed": spec.seed,
        });
        let v = post(base, "/completion", &body, spec.timeout).await?;
        let t =
            v.get("timings").ok_or_else(|| EngineError::Protocol("/completion: no `timings` in the answer".into()))?;
        tg_tokens = field_f64(t, "/completion", "predicted_n")? as u32;
        tg.push(field_f64(t, "/completion", "predicted_per_second")?);
    }
    Ok(StandardResult {
        source: "llama-server `/completion` timings (prompt_per_second, predicted_per_second)".into(),
        runs: vec![
            run(format!("pp{}", spec.prompt_tokens), pp_tokens, pp),
            run(format!("tg{}", spec.gen_tokens), tg_tokens, tg),
        ],
        note: None,
    })
}

/// One raw, non-streamed `/api/generate`: (count, ns) of the prompt and of the generation.
async fn ollama_generate(
    base: &str,
    model: &str,
    prompt: &str,
    num_predict: u32,
    options: &BTreeMap<String, Value>,
    spec: &StandardSpec,
) -> Result<((u64, u64), (u64, u64)), EngineError> {
    let mut opts = options.clone();
    opts.insert("num_predict".into(), json!(num_predict));
    opts.insert("temperature".into(), json!(0.0));
    opts.insert("seed".into(), json!(spec.seed));
    let body = json!({ "model": model, "prompt": prompt, "raw": true, "stream": false, "options": opts });
    let v = post(base, "/api/generate", &body, spec.timeout).await?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(EngineError::InStream { message: e.to_string() });
    }
    // Zero counters vanish from the answer (`omitempty`, `o:api/types.go:379-386`).
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(((n("prompt_eval_count"), n("prompt_eval_duration")), (n("eval_count"), n("eval_duration"))))
}

fn words(n: usize, first: &str) -> String {
    let mut s = format!("{first} ");
    for w in FILLER.split_whitespace().cycle().take(n.saturating_sub(1)) {
        s.push_str(w);
        s.push(' ');
    }
    s
}

fn rate(count: u64, nanos: u64) -> Option<f64> {
    (count > 0 && nanos > 0).then(|| count as f64 / nanos as f64 * 1e9)
}

/// The standard test on an Ollama server at `base`, for `model`, with the engine options the
/// measured runs used (`num_ctx`, `num_gpu`, … so the model is not reloaded).
pub async fn ollama(
    base: &str,
    model: &str,
    options: &BTreeMap<String, Value>,
    spec: &StandardSpec,
) -> Result<StandardResult, EngineError> {
    let base = base.trim_end_matches('/');
    let target = spec.prompt_tokens as usize;
    // Size the prompt from the engine's own count of a first, untimed one.
    let guess = target * 3 / 4;
    let ((counted, _), _) = ollama_generate(base, model, &words(guess, "calibration"), 1, options, spec).await?;
    if counted == 0 {
        return Err(EngineError::Protocol("/api/generate: no prompt_eval_count for the calibration prompt".into()));
    }
    // Stay at or just under the target: a prompt longer than one batch is timed only in part by
    // Ollama's llama engine (`o:runner/llamarunner/runner.go:461,478-488`).
    let sized = (guess as f64 * target as f64 / counted as f64 * 0.98).floor().max(1.0) as usize;
    let mut pp = Vec::new();
    let mut pp_tokens = 0;
    let mut notes = Vec::new();
    for rep in 0..spec.repetitions {
        let ((c, ns), _) = ollama_generate(base, model, &words(sized, &format!("run{rep}")), 1, options, spec).await?;
        if let Some(r) = rate(c, ns) {
            pp.push(r);
            pp_tokens = c as u32;
        }
    }
    let mut tg = Vec::new();
    let mut tg_tokens = u32::MAX;
    for rep in 0..spec.repetitions {
        let prompt = format!("Count upward from {}, one number per line:\n", 1 + rep * 1000);
        let (_, (c, ns)) = ollama_generate(base, model, &prompt, spec.gen_tokens, options, spec).await?;
        if let Some(r) = rate(c, ns) {
            tg.push(r);
            tg_tokens = tg_tokens.min(c as u32);
        }
    }
    if pp_tokens != 0 && pp_tokens != spec.prompt_tokens {
        notes.push(format!(
            "the prefill prompt was {pp_tokens} tokens by Ollama's count (text cannot be sized to the token)"
        ));
    }
    if tg_tokens != u32::MAX && tg_tokens < spec.gen_tokens {
        notes.push(format!(
            "the model stopped after {tg_tokens} of {} tokens in at least one repetition (Ollama has no `ignore_eos`)",
            spec.gen_tokens
        ));
    }
    if pp.is_empty() || tg.is_empty() {
        notes.push("Ollama reported no timing for some requests".into());
    }
    Ok(StandardResult {
        source:
            "Ollama `/api/generate` counters (prompt_eval_count / prompt_eval_duration, eval_count / eval_duration)"
                .into(),
        runs: vec![
            run(format!("pp{}", spec.prompt_tokens), pp_tokens, pp),
            run(format!("tg{}", spec.gen_tokens), if tg_tokens == u32::MAX { 0 } else { tg_tokens }, tg),
        ],
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::fake_http::{FakeServer, Route};

    fn spec() -> StandardSpec {
        StandardSpec { prompt_tokens: 512, gen_tokens: 128, repetitions: 2, timeout: Duration::from_secs(5), seed: 1 }
    }

    #[test]
    fn filler_words_start_with_the_marker_and_have_the_count() {
        let w = words(10, "run3");
        assert!(w.starts_with("run3 "));
        assert_eq!(w.split_whitespace().count(), 10);
    }

    #[tokio::test]
    async fn ollama_sizes_the_prompt_from_the_engines_count_and_reports_its_rates() {
        // Calibration: 384 words counted as 480 tokens; then two prefill runs and two decode runs.
        let calib = json!({"done":true,"prompt_eval_count":480,"prompt_eval_duration":1000000,"eval_count":1,"eval_duration":1000});
        let pp = json!({"done":true,"prompt_eval_count":500,"prompt_eval_duration":250000000,"eval_count":1,"eval_duration":1000});
        let tg = json!({"done":true,"prompt_eval_count":12,"prompt_eval_duration":1000000,"eval_count":100,"eval_duration":2000000000u64});
        let g = "/api/generate";
        let server = FakeServer::start(vec![
            Route::json("POST", g, 200, &calib).times(1),
            Route::json("POST", g, 200, &pp).times(2),
            Route::json("POST", g, 200, &tg),
        ])
        .await
        .unwrap();
        let r = ollama(&server.url(), "m", &BTreeMap::new(), &spec()).await.unwrap();
        assert_eq!(r.runs[0].test, "pp512");
        assert_eq!(r.runs[0].tokens, 500);
        assert_eq!(r.runs[0].tps, vec![2000.0, 2000.0]);
        assert_eq!(r.runs[1].test, "tg128");
        assert_eq!(r.runs[1].tps, vec![50.0, 50.0]);
        let note = r.note.unwrap();
        assert!(note.contains("500 tokens") && note.contains("stopped after 100 of 128"), "{note}");
        let bodies = server.requests_to("POST", g);
        assert_eq!(bodies.len(), 5);
        // The timed prompt was resized from the calibration (384 words → 480 tokens) to about 400
        // words, and each repetition starts with its own word.
        let prompt = |i: usize| -> String { bodies[i].json().unwrap()["prompt"].as_str().unwrap().to_string() };
        let n1 = prompt(1).split_whitespace().count();
        assert!((395..=402).contains(&n1), "{n1} words");
        assert!(prompt(1).starts_with("run0 ") && prompt(2).starts_with("run1 "));
        let v = bodies[3].json().unwrap();
        assert_eq!((v["raw"].as_bool(), v["options"]["num_predict"].as_u64()), (Some(true), Some(128)));
    }

    #[tokio::test]
    async fn an_ollama_error_is_the_engines_text() {
        let body = json!({"error":"model requires more system memory"});
        let server = FakeServer::start(vec![Route::json("POST", "/api/generate", 500, &body)]).await.unwrap();
        let e = ollama(&server.url(), "m", &BTreeMap::new(), &spec()).await.unwrap_err();
        assert_eq!(e.engine_text(), Some("model requires more system memory"), "{e}");
    }

    #[tokio::test]
    async fn llama_server_answers_without_timings_are_a_protocol_error() {
        let server = FakeServer::start(vec![
            Route::json("POST", "/tokenize", 200, &json!({"tokens":[10,11,12]})),
            Route::json("POST", "/completion", 200, &json!({"content":"x"})),
        ])
        .await
        .unwrap();
        let e = llama_server(&server.url(), &spec()).await.unwrap_err();
        assert!(e.to_string().contains("no `timings`"), "{e}");
    }
}
