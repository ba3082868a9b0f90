//! llama-bench's standard test (`pp512` / `tg128`) on the engine just measured, after its runs:
//! the figures community tables carry, from the same engine and settings
//! (`host::standard` holds the requests and where each figure comes from).

use crate::deploy::{Api, Deployed};
use host::engine::GenRequest;
use host::standard::StandardSpec;
use protocol::plan::{EngineKind, Plan};
use protocol::results::StandardResult;
use std::time::Duration;

/// Runs the plan's standard test on `dep` (`engine` is the model's engine, `context` the context
/// it runs with; `req` a request of the measured runs, whose engine options the test keeps so the
/// model is not reloaded). None when the plan turns it off; a result with a note when it cannot
/// run or fails, so the report says why its row is missing.
pub async fn run(
    dep: &Deployed,
    engine: EngineKind,
    context: u32,
    plan: &Plan,
    req: &GenRequest,
) -> Option<StandardResult> {
    let st = &plan.standard;
    if !st.enabled() {
        return None;
    }
    let need = st.prompt_tokens.max(st.gen_tokens) + 1;
    if context < need {
        return Some(StandardResult {
            note: Some(format!(
                "not run: the model's context of {context} tokens is smaller than the {need} the test needs (raise the context, or lower `standard.prompt_tokens`/`gen_tokens`)"
            )),
            ..StandardResult::default()
        });
    }
    let spec = StandardSpec {
        prompt_tokens: st.prompt_tokens,
        gen_tokens: st.gen_tokens,
        repetitions: st.repetitions,
        timeout: Duration::from_secs(plan.defaults.request_timeout_s),
        seed: plan.defaults.seed,
    };
    let r = match (&dep.api, engine) {
        (Api::Ollama(c), _) => {
            host::standard::ollama(c.base_url(), &dep.model_ref, &host::ollama::request_options(req), &spec).await
        }
        (Api::OpenAi(c), EngineKind::LlamaServer) => host::standard::llama_server(c.base(), &spec).await,
        (Api::OpenAi(_), _) => {
            return Some(StandardResult {
                note: Some("not run: an OpenAI-API endpoint offers no token-level API to run it on".into()),
                ..StandardResult::default()
            });
        }
    };
    Some(r.unwrap_or_else(|e| {
        tracing::warn!(message = "The standard test failed.", error = %e);
        StandardResult { note: Some(format!("the standard test failed: {e}")), ..StandardResult::default() }
    }))
}
