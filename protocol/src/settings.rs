//! The vocabulary of engine settings: one typed [`Setting`] per knob, and the [`Settings`] a
//! model is measured with.
//!
//! Plans set them (a model's fields and the plan's defaults), Debug's remedies change them
//! ([`crate::results::RemedyAction::Retry`] carries a list of [`Setting`]s), the Writer applies
//! them with [`Settings::apply`] — the only place a change is validated and applied — and records
//! the [`Settings`] each attempt ran with in its result, so the reports print that record
//! instead of replaying remedies themselves. The operator's `--set key=value` is parsed once,
//! by [`Setting::parse`].

use crate::plan::{ModelSpec, Plan};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The KV cache's element type (llama-server `-ctk/-ctv`, Ollama `OLLAMA_KV_CACHE_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCacheType {
    /// 16-bit floats, the engines' default.
    #[serde(rename = "f16")]
    F16,
    /// 8-bit blocks, about half of f16.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit blocks, about a quarter of f16.
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl KvCacheType {
    /// The name both engines take.
    pub fn as_str(self) -> &'static str {
        match self {
            KvCacheType::F16 => "f16",
            KvCacheType::Q8_0 => "q8_0",
            KvCacheType::Q4_0 => "q4_0",
        }
    }

    /// Bytes per cached element (f16 2; q8_0 34 per 32; q4_0 18 per 32).
    pub fn bytes_per_element(self) -> f64 {
        match self {
            KvCacheType::F16 => 2.0,
            KvCacheType::Q8_0 => 34.0 / 32.0,
            KvCacheType::Q4_0 => 18.0 / 32.0,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [KvCacheType::F16, KvCacheType::Q8_0, KvCacheType::Q4_0].into_iter().find(|k| k.as_str() == s)
    }
}

/// Flash attention (llama-server `-fa on|off|auto`, Ollama `OLLAMA_FLASH_ATTENTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashAttention {
    /// Always.
    On,
    /// Never.
    Off,
    /// The engine decides.
    Auto,
}

impl FlashAttention {
    /// `on`, `off` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            FlashAttention::On => "on",
            FlashAttention::Off => "off",
            FlashAttention::Auto => "auto",
        }
    }
}

/// One setting and its value: what a remedy or the operator changes, and what an attempt
/// records as changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "setting", content = "value", rename_all = "snake_case")]
pub enum Setting {
    /// Context window per request, tokens.
    Context(u32),
    /// Parallel request slots in the engine.
    Slots(u32),
    /// Layers on the GPU; negative lets the engine decide.
    GpuLayers(i32),
    /// CPU threads.
    Threads(u32),
    /// Batch size for prompt processing.
    Batch(u32),
    /// KV cache element type.
    KvCacheType(KvCacheType),
    /// Flash attention.
    FlashAttention(FlashAttention),
    /// Container memory limit, GB.
    MemoryLimitGb(f64),
    /// Seconds the engine may take to become healthy.
    LoadTimeoutS(u64),
    /// Whole-request limit, seconds.
    RequestTimeoutS(u64),
    /// Seconds a streaming answer may go without a token.
    StallTimeoutS(u64),
    /// The Ollama tag.
    Tag(String),
    /// The GGUF file.
    ModelPath(String),
    /// One environment variable for the engine.
    Env {
        /// Its name.
        name: String,
        /// Its value.
        value: String,
    },
    /// One extra engine argument, appended.
    Arg(String),
    /// llama-server's built-in chat template.
    ChatTemplate(String),
}

/// The keys [`Setting::parse`] takes, for messages.
pub const SETTING_KEYS: &str = "context, slots, gpu_layers, threads, batch, kv_cache_type (f16|q8_0|q4_0), \
flash_attention (on|off|auto), memory_limit_gb, load_timeout_s, request_timeout_s, stall_timeout_s, tag, \
model_path, chat_template, env.NAME or arg";

impl Setting {
    /// Parses `key` = `value` as the operator writes it (`--set gpu_layers=30`); every key and
    /// value is checked, and an error names both.
    pub fn parse(key: &str, value: &str) -> Result<Setting, String> {
        let key = key.trim();
        let value = value.trim();
        let whole = |what: &str| -> Result<u64, String> {
            value.parse::<u64>().map_err(|_| format!("`{key}` needs {what}, got `{value}`"))
        };
        let small = |what: &str| -> Result<u32, String> {
            u32::try_from(whole(what)?).map_err(|_| format!("`{key}` is too large: `{value}`"))
        };
        let s = match key {
            "context" => Setting::Context(small("a token count")?),
            "slots" | "parallel" => Setting::Slots(small("a slot count")?),
            "gpu_layers" => {
                Setting::GpuLayers(value.parse().map_err(|_| format!("`gpu_layers` needs an integer, got `{value}`"))?)
            }
            "threads" => Setting::Threads(small("a thread count")?),
            "batch" => Setting::Batch(small("a batch size")?),
            "kv_cache_type" => Setting::KvCacheType(
                KvCacheType::parse(value)
                    .ok_or_else(|| format!("`kv_cache_type` is f16, q8_0 or q4_0, got `{value}`"))?,
            ),
            "flash_attention" => Setting::FlashAttention(match value {
                "on" | "true" | "1" => FlashAttention::On,
                "off" | "false" | "0" => FlashAttention::Off,
                "auto" => FlashAttention::Auto,
                _ => return Err(format!("`flash_attention` is on, off or auto, got `{value}`")),
            }),
            "memory_limit_gb" => Setting::MemoryLimitGb(
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("`memory_limit_gb` needs a number of GB, got `{value}`"))?,
            ),
            "load_timeout_s" => Setting::LoadTimeoutS(whole("a number of seconds")?),
            "request_timeout_s" => Setting::RequestTimeoutS(whole("a number of seconds")?),
            "stall_timeout_s" => Setting::StallTimeoutS(whole("a number of seconds")?),
            "tag" => Setting::Tag(value.to_string()),
            "model_path" => Setting::ModelPath(value.to_string()),
            "arg" => Setting::Arg(value.to_string()),
            "chat_template" => Setting::ChatTemplate(value.to_string()),
            k if k.starts_with("env.") && k.len() > 4 => {
                Setting::Env { name: k[4..].to_string(), value: value.to_string() }
            }
            other => return Err(format!("unknown setting `{other}`: expected {SETTING_KEYS}")),
        };
        s.check()?;
        Ok(s)
    }

    /// Parses `key=value`.
    pub fn parse_pair(pair: &str) -> Result<Setting, String> {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not key=value"))?;
        Setting::parse(k, v)
    }

    /// The value's bounds, whoever made the setting (a remedy, the operator, a message).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Setting::Context(v) if *v < 128 => Err(format!("context must be at least 128, got {v}")),
            Setting::Slots(0) => Err("slots must be at least 1".into()),
            Setting::Threads(0) => Err("threads must be at least 1".into()),
            Setting::Batch(v) if *v < 1 => Err("batch must be at least 1".into()),
            Setting::MemoryLimitGb(v) if !(v.is_finite() && *v >= 0.0625) => {
                Err(format!("memory_limit_gb must be at least 0.0625, got {v}"))
            }
            Setting::Env { name, .. }
                if name.is_empty() || name.contains('=') || name.contains(char::is_whitespace) =>
            {
                Err(format!("`{name}` is not an environment variable name"))
            }
            Setting::ChatTemplate(t)
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Err(format!("`{t}` is not a template name"))
            }
            _ => Ok(()),
        }
    }

    /// The key as [`Setting::parse`] takes it.
    pub fn key(&self) -> String {
        match self {
            Setting::Context(_) => "context".into(),
            Setting::Slots(_) => "slots".into(),
            Setting::GpuLayers(_) => "gpu_layers".into(),
            Setting::Threads(_) => "threads".into(),
            Setting::Batch(_) => "batch".into(),
            Setting::KvCacheType(_) => "kv_cache_type".into(),
            Setting::FlashAttention(_) => "flash_attention".into(),
            Setting::MemoryLimitGb(_) => "memory_limit_gb".into(),
            Setting::LoadTimeoutS(_) => "load_timeout_s".into(),
            Setting::RequestTimeoutS(_) => "request_timeout_s".into(),
            Setting::StallTimeoutS(_) => "stall_timeout_s".into(),
            Setting::Tag(_) => "tag".into(),
            Setting::ModelPath(_) => "model_path".into(),
            Setting::Env { name, .. } => format!("env.{name}"),
            Setting::Arg(_) => "arg".into(),
            Setting::ChatTemplate(_) => "chat_template".into(),
        }
    }

    /// The value as text.
    pub fn value_text(&self) -> String {
        match self {
            Setting::Context(v) | Setting::Slots(v) | Setting::Threads(v) | Setting::Batch(v) => v.to_string(),
            Setting::GpuLayers(v) => v.to_string(),
            Setting::KvCacheType(k) => k.as_str().into(),
            Setting::FlashAttention(f) => f.as_str().into(),
            Setting::MemoryLimitGb(v) => v.to_string(),
            Setting::LoadTimeoutS(v) | Setting::RequestTimeoutS(v) | Setting::StallTimeoutS(v) => v.to_string(),
            Setting::Tag(s) | Setting::ModelPath(s) | Setting::Arg(s) | Setting::ChatTemplate(s) => s.clone(),
            Setting::Env { value, .. } => value.clone(),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key(), self.value_text())
    }
}

/// The settings one attempt at a model runs with: the plan's, with every change applied in
/// order. The Writer records them in each attempt's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Context window per request, tokens.
    pub context: u32,
    /// Parallel request slots.
    pub slots: u32,
    /// Layers on the GPU; `None` (or negative) lets the engine decide.
    pub gpu_layers: Option<i32>,
    /// CPU threads; `None` = the engine's default.
    pub threads: Option<u32>,
    /// Batch size; `None` = the engine's default.
    #[serde(default)]
    pub batch: Option<u32>,
    /// KV cache type; `None` = the engine's default (f16).
    #[serde(default)]
    pub kv_cache_type: Option<KvCacheType>,
    /// Flash attention; `None` = the engine's default.
    #[serde(default)]
    pub flash_attention: Option<FlashAttention>,
    /// Container memory limit, GB.
    pub memory_limit_gb: Option<f64>,
    /// Seconds the engine may take to become healthy.
    pub load_timeout_s: u64,
    /// Whole-request limit, seconds.
    pub request_timeout_s: u64,
    /// Seconds a streaming answer may go without a token.
    pub stall_timeout_s: u64,
    /// The Ollama tag.
    pub tag: Option<String>,
    /// The GGUF file.
    pub model_path: Option<String>,
    /// The engine's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra engine arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// llama-server's built-in chat template, when the plan names one.
    #[serde(default)]
    pub chat_template: Option<String>,
}

impl Settings {
    /// The plan's settings for model `m`.
    pub fn planned(plan: &Plan, m: &ModelSpec) -> Self {
        Settings {
            context: plan.context_for(m),
            slots: plan.defaults.parallel.max(1),
            gpu_layers: m.gpu_layers,
            threads: m.threads,
            batch: m.batch,
            kv_cache_type: m.kv_cache_type,
            flash_attention: m.flash_attention,
            memory_limit_gb: m.memory_limit_gb,
            load_timeout_s: plan.defaults.load_timeout_s,
            request_timeout_s: plan.defaults.request_timeout_s,
            stall_timeout_s: plan.defaults.stall_timeout_s,
            tag: m.tag.clone(),
            model_path: m.model_path.clone(),
            env: m.env.clone(),
            args: m.args.clone(),
            chat_template: m.chat_template.clone(),
        }
    }

    /// Applies one change; a value out of bounds is an error and changes nothing.
    pub fn apply(&mut self, s: &Setting) -> Result<(), String> {
        s.check()?;
        match s.clone() {
            Setting::Context(v) => self.context = v,
            Setting::Slots(v) => self.slots = v,
            Setting::GpuLayers(v) => self.gpu_layers = Some(v),
            Setting::Threads(v) => self.threads = Some(v),
            Setting::Batch(v) => self.batch = Some(v),
            Setting::KvCacheType(v) => self.kv_cache_type = Some(v),
            Setting::FlashAttention(v) => self.flash_attention = Some(v),
            Setting::MemoryLimitGb(v) => self.memory_limit_gb = Some(v),
            Setting::LoadTimeoutS(v) => self.load_timeout_s = v,
            Setting::RequestTimeoutS(v) => self.request_timeout_s = v,
            Setting::StallTimeoutS(v) => self.stall_timeout_s = v,
            Setting::Tag(v) => self.tag = Some(v),
            Setting::ModelPath(v) => self.model_path = Some(v),
            Setting::Env { name, value } => {
                self.env.insert(name, value);
            }
            Setting::Arg(v) => self.args.push(v),
            Setting::ChatTemplate(v) => self.chat_template = Some(v),
        }
        Ok(())
    }

    /// The model as planned, with these settings in its fields (for code that reads the spec).
    pub fn applied_to(&self, m: &ModelSpec) -> ModelSpec {
        ModelSpec {
            context: Some(self.context),
            gpu_layers: self.gpu_layers,
            threads: self.threads,
            batch: self.batch,
            kv_cache_type: self.kv_cache_type,
            flash_attention: self.flash_attention,
            memory_limit_gb: self.memory_limit_gb,
            tag: self.tag.clone(),
            model_path: self.model_path.clone(),
            env: self.env.clone(),
            args: self.args.clone(),
            chat_template: self.chat_template.clone(),
            ..m.clone()
        }
    }

    /// The settings as `(key, value)` rows for a table, in a fixed order; unset ones left out.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut v: Vec<Setting> = vec![Setting::Context(self.context), Setting::Slots(self.slots)];
        v.extend(self.gpu_layers.map(Setting::GpuLayers));
        v.extend(self.threads.map(Setting::Threads));
        v.extend(self.batch.map(Setting::Batch));
        v.extend(self.kv_cache_type.map(Setting::KvCacheType));
        v.extend(self.flash_attention.map(Setting::FlashAttention));
        v.extend(self.memory_limit_gb.map(Setting::MemoryLimitGb));
        v.push(Setting::LoadTimeoutS(self.load_timeout_s));
        v.push(Setting::RequestTimeoutS(self.request_timeout_s));
        v.push(Setting::StallTimeoutS(self.stall_timeout_s));
        v.extend(self.tag.clone().map(Setting::Tag));
        v.extend(self.model_path.clone().map(Setting::ModelPath));
        v.extend(self.env.iter().map(|(k, val)| Setting::Env { name: k.clone(), value: val.clone() }));
        v.extend(self.chat_template.clone().map(Setting::ChatTemplate));
        v.extend(self.args.iter().cloned().map(Setting::Arg));
        v.into_iter().map(|s| (s.key(), s.value_text())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::from_toml(
            "name='t'\n[[models]]\nname='m'\nengine='llama-server'\nruntime='process'\nmodel_path='/m'\n[[prompts]]\nid='p'\ntext='x'\n",
        )
        .unwrap()
    }

    #[test]
    fn every_key_parses_and_prints_back() {
        for pair in [
            "context=2048",
            "slots=2",
            "gpu_layers=-1",
            "threads=8",
            "batch=256",
            "kv_cache_type=q8_0",
            "flash_attention=on",
            "memory_limit_gb=2.5",
            "load_timeout_s=600",
            "request_timeout_s=1800",
            "stall_timeout_s=60",
            "tag=llama3.1:70b",
            "model_path=/srv/m.gguf",
            "env.OLLAMA_KV_CACHE_TYPE=q8_0",
            "arg=--mlock",
            "chat_template=gemma",
        ] {
            let s = Setting::parse_pair(pair).unwrap_or_else(|e| panic!("{pair}: {e}"));
            assert_eq!(s.to_string(), pair);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Setting>(&json).unwrap(), s, "{json}");
        }
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        assert!(Setting::parse("colour", "red").unwrap_err().contains("unknown setting `colour`"));
        assert!(Setting::parse("context", "-1").unwrap_err().contains("`context` needs a token count"));
        assert!(Setting::parse("context", "64").unwrap_err().contains("at least 128"));
        assert!(Setting::parse("kv_cache_type", "q5").unwrap_err().contains("f16, q8_0 or q4_0"));
        assert!(Setting::parse("memory_limit_gb", "0.01").is_err());
        assert!(Setting::parse("threads", "0").is_err());
        assert!(Setting::parse_pair("context").unwrap_err().contains("not key=value"));
        // A message can carry a value out of bounds; applying it is refused and changes nothing.
        let p = plan();
        let mut s = Settings::planned(&p, &p.models[0]);
        let before = s.clone();
        assert!(s.apply(&Setting::Context(3)).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn changes_apply_in_order_and_reach_the_spec() {
        let p = plan();
        let mut s = Settings::planned(&p, &p.models[0]);
        for c in [
            Setting::MemoryLimitGb(2.0),
            Setting::Env { name: "OLLAMA_KV_CACHE_TYPE".into(), value: "q8_0".into() },
            Setting::Context(2048),
            Setting::GpuLayers(30),
            Setting::GpuLayers(20),
        ] {
            s.apply(&c).unwrap();
        }
        assert_eq!(s.memory_limit_gb, Some(2.0));
        assert_eq!(s.context, 2048);
        assert_eq!(s.gpu_layers, Some(20));
        let spec = s.applied_to(&p.models[0]);
        assert_eq!(spec.gpu_layers, Some(20));
        assert_eq!(spec.env["OLLAMA_KV_CACHE_TYPE"], "q8_0");
        assert_eq!(spec.name, "m");
        assert!(s.rows().contains(&("gpu_layers".to_string(), "20".to_string())));
    }
}
