//! Fit verdicts: each model's figures (GGUF header, the Ollama store, or the built-in table)
//! held against the host's capacity, and the concurrent phase's models added up.

use super::{GIB, check, env_lookup, gib, ollama_store};
use crate::fit::{FitInputs, HostCapacity, KvType, verdict};
use crate::{builtin, gguf};
use protocol::plan::{EngineKind, ModelSpec, Plan, Runtime, expand_path};
use protocol::results::{Check, CheckStatus, Fit, FitVerdict, HostFacts};
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
    let mut checks = Vec::new();
    let mut out = Vec::new();
    for m in &plan.models {
        let (v, file_checks) = model_verdict(plan, m, base);
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

/// A model file's header was read: what it is, and where it was read.
fn header_check(model: &str, meta: &gguf::ModelMeta, from: String) -> Check {
    let what = format!("{} {} ({} layers)", meta.architecture, meta.quantization, meta.block_count);
    check(&format!("model.{model}"), CheckStatus::Pass, what, None, from)
}

/// An endpoint's fit is not threadcycle's to predict: the engine already runs with its own
/// settings (context, slots, GPU layers) and may hold other models; none of it is known here.
fn endpoint_verdict(m: &ModelSpec) -> FitVerdict {
    FitVerdict {
        model: m.name.clone(),
        fit: Fit::Unknown,
        source: "not controlled".into(),
        weights_bytes: None,
        kv_bytes: None,
        compute_bytes: None,
        vram_bytes: None,
        ram_bytes: None,
        gpu_layers: None,
        reason: format!(
            "not controlled: the engine at {} was started outside threadcycle with its own settings and may hold other models, so its fit is measured, not predicted",
            m.url.as_deref().unwrap_or_default()
        ),
        suggestion: None,
    }
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
            let stored = match crate::store::find(&ollama_store(plan), tag) {
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
            let inputs = FitInputs {
                context: plan.context_for(m),
                parallel: plan.defaults.parallel,
                kv_type,
                gpu_layers_override: m.gpu_layers,
                ..FitInputs::default()
            };
            verdict(&m.name, &meta, &host, &inputs)
        }
        Err(reason) => FitVerdict {
            model: m.name.clone(),
            fit: Fit::Unknown,
            source: "none".into(),
            weights_bytes: None,
            kv_bytes: None,
            compute_bytes: None,
            vram_bytes: None,
            ram_bytes: None,
            gpu_layers: None,
            reason,
            suggestion: None,
        },
    };
    (v, file_checks)
}
