//! What an endpoint model (`runtime = "endpoint"`) may and may not say: the engine already runs
//! with its own settings, so every setting only an engine threadcycle starts can take is refused
//! by name.

use super::{ModelSpec, PlanError};

/// An endpoint model: a usable `http(s)://host:port` url, the model's name at the engine, and
/// none of the settings only an engine threadcycle starts can take (each refused by name: the
/// engine already runs with its own).
pub(super) fn validate_endpoint(at: &str, m: &ModelSpec) -> Result<(), PlanError> {
    let bad = |field: &str, problem: String| Err(PlanError::Invalid { field: format!("{at}.{field}"), problem });
    let Some(url) = m.url.as_deref() else {
        return bad("url", "an endpoint model needs the engine's url, e.g. `http://127.0.0.1:11434`".into());
    };
    if let Err(why) = check_url(url) {
        return bad("url", format!("`{url}` is not a usable engine url: {why}"));
    }
    if m.tag.as_deref().is_none_or(|t| t.trim().is_empty()) {
        return bad(
            "tag",
            "an endpoint model needs the model's name as the engine lists it (Ollama `/api/tags`, OpenAI `/v1/models`), e.g. `codellama:7b`"
                .into(),
        );
    }
    let not_ours = |field: &str, what: &str| {
        bad(
            field,
            format!(
                "the engine at {url} is already running with its own {what}; threadcycle does not start or reconfigure an endpoint: remove `{field}`"
            ),
        )
    };
    if m.chat_template.is_some() {
        let how = if m.engine.speaks_ollama() {
            "with the model's own TEMPLATE layer (change it with a Modelfile and `ollama create`)"
        } else {
            "with the template it was started with (llama-server `--chat-template`, vLLM `--chat-template`)"
        };
        return bad(
            "chat_template",
            format!(
                "the engine at {url} is already running and formats prompts {how}; threadcycle cannot apply a template to an engine it does not start: remove `chat_template`"
            ),
        );
    }
    for (field, present, what) in [
        ("image", m.image.is_some(), "image"),
        ("binary", m.binary.is_some(), "binary"),
        ("memory_limit_gb", m.memory_limit_gb.is_some(), "memory limit"),
        ("gpus", m.gpus.is_some(), "GPUs"),
        ("port", m.port.is_some(), "port (the url names it)"),
        ("kv_cache_type", m.kv_cache_type.is_some(), "KV cache type"),
        ("flash_attention", m.flash_attention.is_some(), "flash attention setting"),
        ("env", !m.env.is_empty(), "environment"),
        ("args", !m.args.is_empty(), "arguments"),
        ("keep", m.keep, "lifetime (it is never stopped)"),
    ] {
        if present {
            return not_ours(field, what);
        }
    }
    // Ollama takes the context, GPU layers, threads and batch per request (`options`); an
    // OpenAI-compatible server fixed them when it was started.
    if !m.engine.speaks_ollama() {
        for (field, present) in [
            ("context", m.context.is_some()),
            ("gpu_layers", m.gpu_layers.is_some()),
            ("threads", m.threads.is_some()),
            ("batch", m.batch.is_some()),
        ] {
            if present {
                return not_ours(field, field);
            }
        }
    }
    Ok(())
}

/// Whether `url` is `http://` or `https://` followed by a host (and optional port and path).
fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("it must start with http:// or https://")?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err("it names no host");
    }
    if authority.chars().any(|c| c.is_whitespace() || c == '?' || c == '#' || c == '@') {
        return Err("its host part has characters a host cannot have");
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err("its port is not a number from 0 to 65535");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Plan, PlanError, Runtime};

    const MIN: &str = "name = \"t\"\n[[models]]\nname = \"m\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"/m.gguf\"\n[[prompts]]\nid = \"p\"\ntext = \"hi\"\n";

    fn endpoint(engine: &str, extra: &str) -> Result<Plan, PlanError> {
        Plan::from_toml(&format!(
            "name='t'\n[[models]]\nname='m'\nengine='{engine}'\nruntime='endpoint'\nurl='http://127.0.0.1:11434'\ntag='codellama:7b'\n{extra}\n[[prompts]]\nid='p'\ntext='x'\n"
        ))
    }

    fn field_of(r: Result<Plan, PlanError>) -> String {
        match r {
            Err(PlanError::Invalid { field, problem }) => format!("{field}: {problem}"),
            other => panic!("expected an invalid plan, got {other:?}"),
        }
    }

    #[test]
    fn an_endpoint_needs_a_url_and_refuses_what_the_running_engine_owns() {
        let p = endpoint("ollama", "context=8192\ngpu_layers=20\nthreads=8").expect("Ollama takes these per request");
        assert_eq!(
            (p.models[0].runtime, p.models[0].url.as_deref()),
            (Runtime::Endpoint, Some("http://127.0.0.1:11434"))
        );
        endpoint("openai", "").expect("any OpenAI-compatible server");
        for (engine, extra, field) in [
            ("ollama", "memory_limit_gb=8", "models[0].memory_limit_gb"),
            ("ollama", "gpus='all'", "models[0].gpus"),
            ("ollama", "image='ollama/ollama:0.12.6'", "models[0].image"),
            ("ollama", "binary='/usr/bin/ollama'", "models[0].binary"),
            ("ollama", "env={OLLAMA_KV_CACHE_TYPE='q8_0'}", "models[0].env"),
            ("openai", "gpu_layers=20", "models[0].gpu_layers"),
            ("openai", "context=8192", "models[0].context"),
            ("llama-server", "threads=4", "models[0].threads"),
            ("openai", "chat_template='gemma'", "models[0].chat_template"),
            ("llama-server", "chat_template='chatml'", "models[0].chat_template"),
            ("ollama", "chat_template='llama3'", "models[0].chat_template"),
        ] {
            let e = field_of(endpoint(engine, extra));
            assert!(e.starts_with(field) && e.contains("http://127.0.0.1:11434"), "{engine} {extra}: {e}");
            if field.ends_with("chat_template") {
                assert!(e.contains("cannot apply a template to an engine it does not start"), "{e}");
            }
        }
        // An endpoint in the concurrent phase is measured as found (its slots are its own).
        let together = Plan::from_toml(&format!(
            "{MIN}[concurrent]\nlevels=[2]\n[[concurrent.models]]\nname='e'\nengine='ollama'\nruntime='endpoint'\nurl='http://127.0.0.1:11434'\ntag='codellama:7b'\n"
        ))
        .expect("an endpoint may take part in the concurrent phase");
        assert_eq!(together.concurrent.map(|c| c.models[0].runtime), Some(Runtime::Endpoint));
        let no_url = MIN.replace("runtime = \"process\"", "runtime = \"endpoint\"\ntag = \"m\"");
        assert!(field_of(Plan::from_toml(&no_url)).starts_with("models[0].url"));
        let stray = MIN.replace("runtime = \"process\"", "runtime = \"process\"\nurl = \"http://h:1\"");
        assert!(field_of(Plan::from_toml(&stray)).starts_with("models[0].url: only an endpoint"));
        let api_only = MIN.replace("engine = \"llama-server\"", "engine = \"openai\"");
        assert!(field_of(Plan::from_toml(&api_only)).starts_with("models[0].engine"));
        for bad in ["127.0.0.1:11434", "http://", "http://h:port", "ftp://h"] {
            let e = field_of(Plan::from_toml(&format!(
                "name='t'\n[[models]]\nname='m'\nengine='ollama'\nruntime='endpoint'\nurl='{bad}'\ntag='x'\n[[prompts]]\nid='p'\ntext='x'\n"
            )));
            assert!(e.starts_with("models[0].url"), "{bad}: {e}");
        }
    }
}
