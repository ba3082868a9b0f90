//! Fit verdicts: each model's figures (GGUF header, the Ollama store, or the built-in table)
//! held against the host's capacity, and the concurrent phase's models added up.

use super::{GIB, check, env_lookup, gib, ollama_store};
use crate::fit::{FitEngine, FitInputs, HostCapacity, KvType, verdict};
use crate::{builtin, gguf};
use protocol::plan::{EngineKind, ModelSpec, Plan, Runtime, expand_path};
use protocol::results::{Check, CheckStatus, Fit, FitVerdict, HostFacts};
use std::collections::BTreeMap;
use std::path::Path;

/// Predicts every model's fit on the measured host.
pub fn verdicts(plan: &Plan, facts: &HostFacts) -> (Vec<FitVerdict>, Vec<Check>) {
    plan_verdicts(plan, &measured_capacity(facts))
}

/// What the measured host offers an engine.
pub fn measured_capacity(facts: &HostFacts) -> HostCapacity {
    HostCapacity {
        gpus_free_vram: facts.gpus.iter().map(|g| g.vram_total.saturating_sub(g.vram_used)).collect(),
        ram_available: facts.ram_available,
        container_limit: facts.cgroup_memory_limit,
    }
}

/// Whether the plan's concurrent-phase models fit on a host with `base` capacity all at once:
/// each must fit alone, and their predicted RAM and VRAM added up must fit too. None when the
/// plan has no concurrent phase.
pub fn concurrent_fit(plan: &Plan, base: &HostCapacity) -> Option<FitVerdict> {
    let phase = plan.concurrent.as_ref()?;
    let alone = Plan { models: phase.models.clone(), ..plan.clone() };
    let (vs, _) = plan_verdicts(&alone, base);
    let names: Vec<&str> = phase.models.iter().map(|m| m.name.as_str()).collect();
    let sum = |f: fn(&FitVerdict) -> Option<u64>| vs.iter().filter_map(f).fold(0u64, u64::saturating_add);
    let (ram, vram) = (sum(|v| v.ram_bytes), sum(|v| v.vram_bytes));
    let ram_cap = base.ram_limit();
    let vram_cap = base.gpus_free_vram.iter().copied().fold(0u64, u64::saturating_add);
    let need = format!(
        "together they need {} of RAM and {} of VRAM; {} of RAM and {} of VRAM are free",
        gib(ram),
        gib(vram),
        gib(ram_cap),
        gib(vram_cap)
    );
    let (fit, reason) = if let Some(v) = vs.iter().find(|v| v.fit == Fit::NoGo) {
        (Fit::NoGo, format!("{} does not fit even alone: {}", v.model, v.reason))
    } else if ram > ram_cap || vram > vram_cap {
        (Fit::NoGo, need)
    } else if vs.iter().any(|v| v.fit == Fit::Unknown) {
        (Fit::Unknown, format!("{need}; not every model's need is known"))
    } else if vs.iter().any(|v| v.fit == Fit::GoPartialOffload) {
        (Fit::GoPartialOffload, format!("{need}; some layers stay on the CPU"))
    } else {
        (Fit::Go, need)
    };
    Some(FitVerdict {
        model: names.join(" + "),
        fit,
        source: "sum of the models' predictions".into(),
        weights_bytes: None,
        kv_bytes: None,
        compute_bytes: None,
        vram_bytes: Some(vram),
        ram_bytes: Some(ram),
        gpu_layers: None,
        reason,
        suggestion: None,
    })
}

/// Predicts every model's fit on a host with `base` capacity (measured, or a host profile);
/// a Docker model's own memory limit replaces the base container limit.
pub fn plan_verdicts(plan: &Plan, base: &HostCapacity) -> (Vec<FitVerdict>, Vec<Check>) {
    plan_verdicts_with(plan, base, &BTreeMap::new())
}

/// What an Ollama endpoint told about one of the plan's models.
#[derive(Debug, Clone)]
pub struct EndpointFigures {
    /// The engine's url.
    pub url: String,
    /// The model's figures from `/api/show`, or why there are none.
    pub meta: Result<gguf::ModelMeta, String>,
    /// VRAM and RAM the engine's loaded models hold now (`/api/ps` `size_vram`, `size − size_vram`),
    /// bytes: Ollama unloads them to make room for a model that does not fit beside them.
    pub held: (u64, u64),
}

/// Asks each Ollama endpoint model's engine for its figures (`/api/show`) and what it holds
/// (`/api/ps`), by model name. An engine that does not answer gives the reason, not an error:
/// the Writer's own check names a bad endpoint before anything is measured.
pub async fn ask_endpoints(plan: &Plan) -> BTreeMap<String, EndpointFigures> {
    let mut out = BTreeMap::new();
    for m in plan.models.iter().filter(|m| m.runtime == Runtime::Endpoint && m.engine.speaks_ollama()) {
        let (Some(url), Some(tag)) = (m.url.as_deref(), m.tag.as_deref()) else { continue };
        let url = url.trim_end_matches('/').to_string();
        let c = host::ollama::OllamaClient::new(&url);
        let what = format!("`{tag}` at {url}");
        let meta = match c.show(tag).await {
            Ok(show) => gguf::meta_from_show(&show, &what).map_err(|e| e.to_string()),
            Err(e) => Err(format!("{url} did not describe `{tag}` (/api/show): {e}")),
        };
        // Only an engine that answered is asked again (an unreachable one would cost a second wait).
        let loaded = if meta.is_ok() { c.ps().await.unwrap_or_default() } else { Vec::new() };
        let held = loaded.iter().fold((0u64, 0u64), |(v, r), p| {
            (v.saturating_add(p.size_vram), r.saturating_add(p.size.saturating_sub(p.size_vram)))
        });
        out.insert(m.name.clone(), EndpointFigures { url, meta, held });
    }
    out
}

/// Whether `url` names this machine (loopback), where the measured memory is the engine's.
fn is_local(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// An Ollama endpoint model's fit from its own `/api/show`: predicted like a stored model when
/// the engine runs on this machine, with the memory its loaded models hold counted as free
/// (Ollama's scheduler unloads a loaded runner when a new model does not fit beside it,
/// `o:server/sched.go:219-229`); unknown, with the reason, otherwise.
fn endpoint_predicted(
    plan: &Plan,
    m: &ModelSpec,
    base: &HostCapacity,
    f: &EndpointFigures,
) -> (FitVerdict, Vec<Check>) {
    let url = &f.url;
    let meta = match &f.meta {
        Ok(meta) => meta,
        Err(why) => {
            let mut v = endpoint_verdict(m);
            v.reason = format!("{}; its figures could not be read: {why}", v.reason);
            return (v, Vec::new());
        }
    };
    let checks = vec![header_check(&m.name, meta, format!("figures read from /api/show at {url}"))];
    if !is_local(url) {
        let mut v = endpoint_verdict(m);
        v.weights_bytes = Some(meta.weights_bytes);
        v.reason = format!(
            "the engine at {url} runs on another machine: its memory is not measured here, so the fit of {} of weights is not predicted",
            gib(meta.weights_bytes)
        );
        return (v, checks);
    }
    let (held_vram, held_ram) = f.held;
    let mut host = base.clone();
    if let Some(g) = host.gpus_free_vram.first_mut() {
        *g = g.saturating_add(held_vram);
    }
    host.ram_available = host.ram_available.saturating_add(held_ram);
    let inputs = FitInputs {
        engine: FitEngine::Ollama,
        context: plan.context_for(m),
        parallel: plan.defaults.parallel,
        gpu_layers_override: m.gpu_layers,
        ..FitInputs::default()
    };
    let mut v = verdict(&m.name, meta, &host, &inputs);
    v.source = format!("Ollama /api/show at {url}");
    let held = if held_vram + held_ram > 0 {
        format!(
            "; counts the {} of VRAM and {} of RAM its loaded models hold as free (Ollama unloads them to make room)",
            gib(held_vram),
            gib(held_ram)
        )
    } else {
        String::new()
    };
    v.reason = format!(
        "{}{held}; predicted for the plan's context with an f16 KV cache: the engine's own settings (OLLAMA_NUM_PARALLEL, OLLAMA_KV_CACHE_TYPE) may differ",
        v.reason
    );
    (v, checks)
}

/// [`plan_verdicts`] with what Ollama endpoints said about their models ([`ask_endpoints`]).
pub fn plan_verdicts_with(
    plan: &Plan,
    base: &HostCapacity,
    shown: &BTreeMap<String, EndpointFigures>,
) -> (Vec<FitVerdict>, Vec<Check>) {
    let mut checks = Vec::new();
    let mut out = Vec::new();
    for m in &plan.models {
        let (v, file_checks) = match shown.get(&m.name).filter(|_| m.runtime == Runtime::Endpoint) {
            Some(f) => endpoint_predicted(plan, m, base, f),
            None => model_verdict(plan, m, base),
        };
        checks.extend(file_checks);
        out.push(v);
    }
    (out, checks)
}

/// The recalled figures for an Ollama tag that is not in the store yet.
fn builtin_meta(tag: &str) -> Result<gguf::ModelMeta, String> {
    builtin::lookup(tag).ok_or_else(|| {
        format!("no metadata for `{tag}` yet: not in the Ollama store nor the built-in table; it is read from /api/show after the pull")
    })
}

/// How prompts reach a model whose GGUF has no chat template: a warning (the engine falls back
/// to a format the model was not trained on), unless the plan names the template to use.
fn template_check(m: &ModelSpec, meta: &gguf::ModelMeta) -> Option<Check> {
    (meta.chat_template == Some(false)).then(|| match &m.chat_template {
        Some(t) => check(
            &protocol::results::chat_template_check(&m.name),
            CheckStatus::Pass,
            format!("no chat template in the GGUF; the plan's `{t}` is passed to the engine"),
            None,
            format!("llama-server formats every prompt with its built-in `{t}` template (`--chat-template {t}`)"),
        ),
        None => check(
            &protocol::results::chat_template_check(&m.name),
            CheckStatus::Warn,
            "no chat template".into(),
            None,
            "the GGUF has no `tokenizer.chat_template`: llama-server falls back to ChatML, which a model not trained on it (a base model) reads as plain text, so its answers may echo the prompt and run to the token cap; their quality is not assessed. Name the model's template in the plan (`chat_template`)".into(),
        ),
    })
}

/// How Ollama will format prompts for a pulled model (`store::PromptFormat`): its renderer or
/// template layer passes; none means Ollama sends the bare prompt (`{{ .Prompt }}`,
/// `template/template.go:94`), a warning whose answers' quality is not assessed.
fn ollama_template_check(m: &ModelSpec, tag: &str, f: &crate::store::PromptFormat) -> Check {
    let name = protocol::results::chat_template_check(&m.name);
    let stops = if f.stop.is_empty() {
        "the model's own end-of-sequence token ends each answer (no `stop` parameters)".to_string()
    } else {
        let quoted: Vec<String> = f.stop.iter().map(|s| format!("{s:?}")).collect();
        format!("a turn ends at the model's end-of-sequence token or at {} (its params layer)", quoted.join(", "))
    };
    match (&f.renderer, &f.template) {
        (Some(r), _) => check(
            &name,
            CheckStatus::Pass,
            format!("built-in renderer `{r}`"),
            None,
            format!("Ollama formats every chat for `{tag}` with its `{r}` renderer (`server/images.go:221`); {stops}"),
        ),
        (None, Some(Ok(t))) => check(
            &name,
            CheckStatus::Pass,
            format!("template layer ({} bytes)", t.len()),
            None,
            format!(
                "Ollama formats every chat turn for `{tag}` with the model's TEMPLATE layer (`server/images.go:370-379`){}; {stops}",
                if t.contains(".System") {
                    ", system message included"
                } else {
                    "; the template has no `.System`, so a system message is dropped"
                }
            ),
        ),
        (None, Some(Err(e))) => check(
            &name,
            CheckStatus::Fail,
            "template layer unreadable".into(),
            None,
            format!("{e}: Ollama cannot load `{tag}` until the blob is back; pull it again (`ollama pull {tag}`)"),
        ),
        (None, None) => check(
            &name,
            CheckStatus::Warn,
            "no template layer".into(),
            None,
            format!(
                "`{tag}` has no TEMPLATE layer, so Ollama sends the bare prompt (`{{{{ .Prompt }}}}`, `template/template.go:94`): roles and the system message are dropped and a chat model reads it as plain text; its answers' quality is not assessed. Give it a TEMPLATE in a Modelfile (`ollama create`)"
            ),
        ),
    }
}

/// A model file's header was read: what it is, and where it was read.
fn header_check(model: &str, meta: &gguf::ModelMeta, from: String) -> Check {
    let what = format!("{} {} ({} layers)", meta.architecture, meta.quantization, meta.block_count);
    check(&format!("model.{model}"), CheckStatus::Pass, what, None, from)
}

/// An endpoint's fit is not threadcycle's to predict: the engine already runs with its own
/// settings (context, slots, GPU layers) and may hold other models; none of it is known here.
fn endpoint_verdict(m: &ModelSpec) -> FitVerdict {
    FitVerdict::unknown(
        &m.name,
        "not controlled",
        format!(
            "not controlled: the engine at {} was started outside threadcycle with its own settings and may hold other models, so its fit is measured, not predicted",
            m.url.as_deref().unwrap_or_default()
        ),
    )
}

fn model_verdict(plan: &Plan, m: &ModelSpec, base: &HostCapacity) -> (FitVerdict, Vec<Check>) {
    if m.runtime == Runtime::Endpoint {
        return (endpoint_verdict(m), Vec::new());
    }
    let mut file_checks = Vec::new();
    let meta = match (m.engine, &m.model_path, &m.tag) {
        (EngineKind::LlamaServer, Some(raw), _) => match expand_path(raw, &env_lookup) {
            Ok(p) => match gguf::read_metadata(Path::new(&p)) {
                Ok(meta) => {
                    file_checks.push(header_check(&m.name, &meta, format!("GGUF header read from {p}")));
                    file_checks.extend(template_check(m, &meta));
                    Ok(meta)
                }
                Err(e) => {
                    file_checks.push(check(
                        &format!("model.{}", m.name),
                        CheckStatus::Fail,
                        "unreadable".into(),
                        None,
                        format!("{p}: {e}"),
                    ));
                    Err(format!("cannot read the model file: {e}"))
                }
            },
            Err(e) => Err(format!("model_path: {e}")),
        },
        (EngineKind::Ollama, _, Some(tag)) => {
            // Already pulled: the GGUF header itself, not recalled figures.
            let found = crate::store::find(&ollama_store(plan), tag);
            if let Ok(Some(stored)) = &found {
                file_checks.push(ollama_template_check(m, tag, &stored.format));
            }
            let stored = match found {
                Ok(Some(crate::store::Stored { model_blob: Some(blob), .. })) => match gguf::read_metadata(&blob) {
                    Ok(meta) => Ok(Some((blob, meta))),
                    Err(e) => Err(format!("{}: {e}", blob.display())),
                },
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            };
            match stored {
                Ok(Some((blob, meta))) => {
                    let from = format!("GGUF header of `{tag}` read from the Ollama store ({})", blob.display());
                    file_checks.push(header_check(&m.name, &meta, from));
                    Ok(meta)
                }
                Ok(None) => builtin_meta(tag),
                Err(why) => {
                    let detail = format!("{why}; using the built-in figures");
                    let name = format!("model.{}", m.name);
                    file_checks.push(check(&name, CheckStatus::Warn, "unreadable in the store".into(), None, detail));
                    builtin_meta(tag)
                }
            }
        }
        (_, _, Some(tag)) => builtin_meta(tag),
        _ => Err("the plan gives neither a model file nor a tag".into()),
    };
    let v = match meta {
        Ok(meta) => {
            let host = HostCapacity {
                container_limit: match (m.runtime, m.memory_limit_gb) {
                    (Runtime::Docker, Some(g)) => Some((g * GIB) as u64),
                    _ => base.container_limit,
                },
                ..base.clone()
            };
            let kv_type = m.env.get("OLLAMA_KV_CACHE_TYPE").and_then(|t| KvType::parse(t)).unwrap_or(KvType::F16);
            let ollama = m.engine == EngineKind::Ollama;
            let inputs = FitInputs {
                engine: if ollama { FitEngine::Ollama } else { FitEngine::LlamaServer },
                // Ollama reads these from its environment (o:envconfig/config.go:190,
                // OLLAMA_GPU_OVERHEAD in bytes).
                flash_attention: m.env.get("OLLAMA_FLASH_ATTENTION").filter(|_| ollama).map(|v| env_bool(v)),
                gpu_overhead: m
                    .env
                    .get("OLLAMA_GPU_OVERHEAD")
                    .filter(|_| ollama)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0),
                context: plan.context_for(m),
                parallel: plan.defaults.parallel,
                kv_type,
                gpu_layers_override: m.gpu_layers,
                ..FitInputs::default()
            };
            verdict(&m.name, &meta, &host, &inputs)
        }
        Err(reason) => FitVerdict::unknown(&m.name, "none", reason),
    };
    (v, file_checks)
}

/// An environment flag as Go's `strconv.ParseBool` reads it (Ollama's `envconfig.Bool`).
fn env_bool(v: &str) -> bool {
    matches!(v.trim(), "1" | "t" | "T" | "TRUE" | "true" | "True")
}
