//! The endpoint runtime's side of a deployment: an engine already running at the model's `url`
//! (Ollama's service, llama-server, vLLM, LM Studio) is checked and measured as found. Nothing
//! is started, pulled, reconfigured or stopped; the `Launch` records the URL, not a command.

use crate::deploy::{Api, Deployed, Failure, Place};
use crate::settings::Settings;
use host::endpoint::{EndpointApi, EndpointError, Found, probe};
use host::ollama::OllamaClient;
use host::openai::OpenAiClient;
use protocol::events::Step;
use protocol::launch::Launch;
use protocol::plan::{EngineKind, ModelSpec};
use protocol::results::{Evidence, FailureClass};

/// The API the plan expects the endpoint to speak.
fn api_of(engine: EngineKind) -> EndpointApi {
    if engine.speaks_ollama() { EndpointApi::Ollama } else { EndpointApi::OpenAi }
}

/// Checks an endpoint model before anything is measured: the URL answers, as an engine, in the
/// plan's API, and the engine has the model. The error names the URL and the model.
pub async fn check(m: &ModelSpec) -> Result<Found, EndpointError> {
    probe(m.url.as_deref().unwrap_or_default(), api_of(m.engine), &m.name, m.tag.as_deref().unwrap_or_default()).await
}

/// What the reports say about a model measured at an endpoint: what threadcycle did not control.
pub fn not_controlled(url: &str, engine: EngineKind) -> String {
    let settings = if engine.speaks_ollama() {
        "the server's own settings (OLLAMA_NUM_PARALLEL, OLLAMA_KV_CACHE_TYPE, flash attention, keep-alive, \
         its model store) were not threadcycle's; only the requests' `options` were"
    } else {
        "the server's settings (context, slots, GPU layers, threads, batch, KV cache) were fixed when it was started, \
         not by threadcycle"
    };
    format!(
        "Measured as found at {url}: threadcycle did not start, configure or stop this engine; {settings}; \
         other clients may have used it during the measurement"
    )
}

/// "Deploys" an endpoint model: checks it and wraps it as a [`Deployed`] whose teardown leaves
/// the engine running.
pub async fn deploy(s: &Settings, on_step: &(dyn Fn(Step) + Sync)) -> Result<Deployed, Failure> {
    let m = &s.model;
    let url = m.url.clone().unwrap_or_default().trim_end_matches('/').to_string();
    let started = tokio::time::Instant::now();
    let found = check(m).await.map_err(|e| failure(&e))?;
    on_step(Step::EndpointFound { url: url.clone(), model: found.listed_as.clone(), pid: found.pid });
    let (api, version) = match m.engine {
        EngineKind::Ollama => {
            (Api::Ollama(OllamaClient::new(&url)), found.version.clone().map(|v| format!("ollama {v} (as found)")))
        }
        _ => (Api::OpenAi(OpenAiClient::new(&url)), None),
    };
    let mut d = Deployed::found(
        api,
        Place::Endpoint { url: url.clone(), pid: found.pid, note: found.process_note.clone() },
        found.listed_as.clone(),
        Launch { endpoint: Some(url.clone()), ..Default::default() },
    );
    d.load_ms = started.elapsed().as_secs_f64() * 1000.0;
    d.engine_version = version;
    if let Api::Ollama(c) = &d.api {
        if let Ok(show) = c.show(&d.model_ref).await {
            d.quantization = show.quantization_level.clone();
        }
        if let Ok(list) = c.list().await {
            d.digest = list.into_iter().find(|t| t.name == d.model_ref || t.model == d.model_ref).map(|t| t.digest);
        }
    }
    Ok(d)
}

/// A bad endpoint as a failure (when it goes bad between the first check and an attempt).
pub fn failure(e: &EndpointError) -> Failure {
    let class = match e {
        EndpointError::Unreachable { .. } => FailureClass::EngineUnhealthy,
        EndpointError::NoSuchModel { .. } => FailureClass::ModelNotFound,
        EndpointError::NotAnEngine { .. } | EndpointError::OtherApi { .. } => FailureClass::Other,
    };
    Failure {
        class,
        message: e.to_string(),
        evidence: Evidence { engine_error: Some(e.to_string()), ..Default::default() },
        target: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_names_the_url_and_what_was_not_controlled() {
        let n = not_controlled("http://127.0.0.1:11434", EngineKind::Ollama);
        assert!(n.contains("http://127.0.0.1:11434") && n.contains("did not start") && n.contains("other clients"));
        assert!(not_controlled("http://h:8000", EngineKind::OpenAi).contains("fixed when it was started"));
    }
}
