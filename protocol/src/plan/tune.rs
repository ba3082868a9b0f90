//! The plan's `[tune]` section: after a model's measurement, search for the settings that serve it
//! best within the plan's limits (Debug proposes, the Writer measures).

use super::{EngineKind, Plan, PlanError, Runtime};
use serde::{Deserialize, Serialize};

/// What a tuning search optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TuneGoal {
    /// The highest decode tokens/s (client-measured, as in the benchmark).
    #[default]
    DecodeTps,
    /// The lowest time to first token.
    Ttft,
}

impl TuneGoal {
    /// The goal as the reports name it.
    pub fn describe(self) -> &'static str {
        match self {
            TuneGoal::DecodeTps => "highest decode tokens/s",
            TuneGoal::Ttft => "lowest time to first token",
        }
    }
}

/// A setting the search may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TuneKnob {
    /// Layers on the GPU (bisection for the largest that fits).
    GpuLayers,
    /// CPU threads.
    Threads,
    /// Batch size.
    Batch,
    /// KV cache type (f16 / q8_0).
    KvType,
}

impl TuneKnob {
    /// The search order: GPU layers, threads, batch, KV cache type.
    pub const ORDER: [TuneKnob; 4] = [TuneKnob::GpuLayers, TuneKnob::Threads, TuneKnob::Batch, TuneKnob::KvType];

    /// The knob as written in the plan.
    pub fn as_str(self) -> &'static str {
        match self {
            TuneKnob::GpuLayers => "gpu_layers",
            TuneKnob::Threads => "threads",
            TuneKnob::Batch => "batch",
            TuneKnob::KvType => "kv_type",
        }
    }
}

fn default_vary() -> Vec<TuneKnob> {
    TuneKnob::ORDER.to_vec()
}

fn default_max_trials() -> u32 {
    8
}

fn default_max_minutes() -> f64 {
    30.0
}

fn default_repetitions() -> u32 {
    2
}

/// `[tune]`: a bounded search for the best settings of each model, after its measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSpec {
    /// What the search optimises.
    #[serde(default)]
    pub goal: TuneGoal,
    /// Which settings may change, searched in the order GPU layers, threads, batch, KV type.
    #[serde(default = "default_vary")]
    pub vary: Vec<TuneKnob>,
    /// Trials measured at most, the baseline included.
    #[serde(default = "default_max_trials")]
    pub max_trials: u32,
    /// Minutes of tuning at most per model; a trial under way when it runs out finishes.
    #[serde(default = "default_max_minutes")]
    pub max_minutes: f64,
    /// Measured repetitions of the tuning prompt per trial (short runs; after one warm-up).
    #[serde(default = "default_repetitions")]
    pub repetitions: u32,
    /// The prompt trials answer (an id from `prompts`; the first prompt when absent).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Output tokens per trial request (`defaults.max_tokens` when absent).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Engine memory a candidate may use, GB: one predicted to need more is not tried, one
    /// measured above it cannot win (a Docker model's `memory_limit_gb` when absent).
    #[serde(default)]
    pub memory_limit_gb: Option<f64>,
    /// VRAM to leave free on the GPU, GB: GPU layers are searched only up to what fits with it.
    #[serde(default)]
    pub vram_headroom_gb: Option<f64>,
    /// The models to tune, by name (every model threadcycle starts when absent; endpoints are
    /// never tuned: their settings are the running engine's).
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

impl TuneSpec {
    /// Whether model `name` is tuned.
    pub fn tunes(&self, plan: &Plan, name: &str) -> bool {
        let Some(m) = plan.models.iter().find(|m| m.name == name) else { return false };
        m.runtime != Runtime::Endpoint
            && m.engine == EngineKind::LlamaServer
            && self.models.as_ref().is_none_or(|ms| ms.iter().any(|n| n == name))
    }
}

impl Plan {
    /// The maximum temperature a tuning trial may reach (`criteria.max_temp_c`).
    pub fn tune_max_temp_c(&self) -> Option<f64> {
        self.criteria.max_temp_c
    }

    pub(super) fn validate_tune(&self) -> Result<(), PlanError> {
        let Some(t) = &self.tune else { return Ok(()) };
        let bad = |field: &str, problem: String| Err(PlanError::Invalid { field: format!("tune.{field}"), problem });
        if t.vary.is_empty() {
            return bad("vary", "expected at least one of gpu_layers, threads, batch, kv_type".into());
        }
        if let Some(k) = t.vary.iter().enumerate().find_map(|(i, k)| t.vary[..i].contains(k).then_some(k)) {
            return bad("vary", format!("`{}` is listed twice", k.as_str()));
        }
        if !(1..=100).contains(&t.max_trials) {
            return bad("max_trials", format!("expected 1 to 100 (the baseline counts as one), got {}", t.max_trials));
        }
        if !(t.max_minutes.is_finite() && t.max_minutes > 0.0 && t.max_minutes <= 24.0 * 60.0) {
            return bad("max_minutes", format!("expected more than 0 and at most 1440, got {}", t.max_minutes));
        }
        if !(1..=100).contains(&t.repetitions) {
            return bad("repetitions", format!("expected 1 to 100, got {}", t.repetitions));
        }
        if let Some(p) = &t.prompt
            && !self.prompts.iter().any(|q| &q.id == p)
        {
            let ids: Vec<&str> = self.prompts.iter().map(|q| q.id.as_str()).collect();
            return bad("prompt", format!("`{p}` is not a prompt of this plan (its prompts: {})", ids.join(", ")));
        }
        if let Some(n) = t.max_tokens
            && !(1..=1_000_000).contains(&n)
        {
            return bad("max_tokens", format!("expected 1 to 1000000, got {n}"));
        }
        for (field, v) in [("memory_limit_gb", t.memory_limit_gb), ("vram_headroom_gb", t.vram_headroom_gb)] {
            if let Some(v) = v
                && !(v.is_finite() && (0.0..=1_000_000.0).contains(&v))
            {
                return bad(field, format!("expected 0 to 1000000 GB, got {v}"));
            }
        }
        if t.memory_limit_gb == Some(0.0) {
            return bad("memory_limit_gb", "expected more than 0 GB: nothing fits in none".into());
        }
        if let Some(ms) = &t.models {
            for (i, name) in ms.iter().enumerate() {
                let Some(m) = self.models.iter().find(|m| &m.name == name) else {
                    return bad(&format!("models[{i}]"), format!("`{name}` is not a model of this plan"));
                };
                if m.runtime == Runtime::Endpoint {
                    return bad(
                        &format!("models[{i}]"),
                        format!(
                            "`{name}` is an endpoint: its settings are the running engine's, so it cannot be tuned"
                        ),
                    );
                }
                if m.engine != EngineKind::LlamaServer {
                    return bad(
                        &format!("models[{i}]"),
                        format!(
                            "`{name}` runs on {:?}: tuning restarts llama-server with each candidate, and only llama-server models are tuned",
                            m.engine
                        ),
                    );
                }
            }
        }
        if !self.models.iter().any(|m| t.tunes(self, &m.name)) {
            return bad(
                "models",
                "no model of this plan can be tuned: tuning needs a llama-server model threadcycle starts (not an endpoint)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
name = "t"
[[models]]
name = "m"
engine = "llama-server"
runtime = "process"
model_path = "/m.gguf"
[[models]]
name = "e"
engine = "llama-server"
runtime = "endpoint"
url = "http://127.0.0.1:8080"
tag = "x"
[[prompts]]
id = "p"
text = "hi"
"#;

    fn field_of(extra: &str) -> (String, String) {
        match Plan::from_toml(&format!("{BASE}\n[tune]\n{extra}")) {
            Err(PlanError::Invalid { field, problem }) => (field, problem),
            other => panic!("expected an invalid field for {extra:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_tune_section_parses_with_defaults() {
        let p = Plan::from_toml(&format!("{BASE}\n[tune]\ngoal = \"ttft\"\nvary = [\"threads\", \"kv_type\"]\n"))
            .expect("valid");
        let t = p.tune.as_ref().expect("tune");
        assert_eq!(t.goal, TuneGoal::Ttft);
        assert_eq!(t.vary, vec![TuneKnob::Threads, TuneKnob::KvType]);
        assert_eq!((t.max_trials, t.repetitions), (8, 2));
        assert!(t.tunes(&p, "m"));
        assert!(!t.tunes(&p, "e"), "an endpoint is never tuned");
        assert!(Plan::from_toml(BASE).expect("valid").tune.is_none());
    }

    #[test]
    fn bad_tune_values_name_the_field() {
        for (extra, field, says) in [
            ("vary = []", "tune.vary", "at least one"),
            ("vary = [\"threads\", \"threads\"]", "tune.vary", "twice"),
            ("max_trials = 0", "tune.max_trials", "1 to 100"),
            ("max_minutes = -1.0", "tune.max_minutes", "more than 0"),
            ("repetitions = 0", "tune.repetitions", "1 to 100"),
            ("prompt = \"nope\"", "tune.prompt", "`nope` is not a prompt"),
            ("memory_limit_gb = 0.0", "tune.memory_limit_gb", "more than 0"),
            ("vram_headroom_gb = -2.0", "tune.vram_headroom_gb", "0 to 1000000"),
            ("models = [\"zzz\"]", "tune.models[0]", "`zzz` is not a model"),
            ("models = [\"e\"]", "tune.models[0]", "endpoint"),
            ("max_tokens = 0", "tune.max_tokens", "1 to 1000000"),
        ] {
            let (f, problem) = field_of(extra);
            assert_eq!(f, field, "{extra}");
            assert!(problem.contains(says), "{extra}: {problem}");
        }
        match Plan::from_toml(&format!("{BASE}\n[tune]\ngoal = \"fastest\"\n")) {
            Err(PlanError::Syntax(e)) => assert!(e.contains("goal") || e.contains("fastest"), "{e}"),
            other => panic!("unknown goal accepted: {other:?}"),
        }
        match Plan::from_toml(&format!("{BASE}\n[tune]\nvary = [\"ctx\"]\n")) {
            Err(PlanError::Syntax(e)) => assert!(e.contains("ctx"), "{e}"),
            other => panic!("unknown knob accepted: {other:?}"),
        }
    }
}
