//! The tuning phase's messages and results: the Writer's `tune_request` to Debug, Debug's
//! `TuneProposal` (kept in the escalations bucket as `tune.<request id>`, which the Writer
//! polls, as it polls escalation decisions), and the `TuneResult` stored in a model's result.

use crate::launch::Launch;
use crate::plan::{TuneGoal, TuneSpec};
use crate::results::Stat;
use crate::settings::{FlashAttention, KvCacheType, Setting};
use serde::{Deserialize, Serialize};

/// The settings a trial runs with; `None` leaves the engine's (or the plan's) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TuneConfig {
    /// Layers on the GPU.
    #[serde(default)]
    pub gpu_layers: Option<i32>,
    /// CPU threads.
    #[serde(default)]
    pub threads: Option<u32>,
    /// Batch size (llama-server `-b` and `-ub`).
    #[serde(default)]
    pub batch: Option<u32>,
    /// KV cache type.
    #[serde(default)]
    pub kv_type: Option<KvCacheType>,
}

impl TuneConfig {
    /// The changes that turn the plan's settings into these: a quantized KV cache brings flash
    /// attention on with it (both engines need it for one).
    pub fn changes(&self) -> Vec<Setting> {
        let mut out = Vec::new();
        if let Some(v) = self.gpu_layers {
            out.push(Setting::GpuLayers(v));
        }
        if let Some(v) = self.threads {
            out.push(Setting::Threads(v));
        }
        if let Some(v) = self.batch {
            out.push(Setting::Batch(v));
        }
        if let Some(k) = self.kv_type {
            out.push(Setting::KvCacheType(k));
            if k != KvCacheType::F16 {
                out.push(Setting::FlashAttention(FlashAttention::On));
            }
        }
        out
    }

    /// `GPU layers 20, threads 4, batch 512, KV q8_0`; unset ones say `default`.
    pub fn describe(&self) -> String {
        let or_default = |v: Option<String>| v.unwrap_or_else(|| "default".into());
        format!(
            "GPU layers {}, threads {}, batch {}, KV {}",
            or_default(self.gpu_layers.map(|v| v.to_string())),
            or_default(self.threads.map(|v| v.to_string())),
            or_default(self.batch.map(|v| v.to_string())),
            or_default(self.kv_type.map(|k| k.as_str().to_string())),
        )
    }
}

/// How a trial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialVerdict {
    /// Measured within the limits: it may win.
    Measured,
    /// Measured, but above a limit (memory, temperature): it may not win.
    OverLimit,
    /// The engine failed with it (would not start, out of memory, an error, overheating).
    Failed,
    /// Not tried: predicted not to fit.
    Skipped,
    /// Stopped by the operator's cancel before it finished.
    Canceled,
}

impl TrialVerdict {
    /// The verdict as the reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialVerdict::Measured => "measured",
            TrialVerdict::OverLimit => "over limit",
            TrialVerdict::Failed => "failed",
            TrialVerdict::Skipped => "skipped",
            TrialVerdict::Canceled => "canceled",
        }
    }
}

/// One candidate of the search, tried or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Its place in the search, from 1 (skipped candidates count).
    pub number: u32,
    /// The stage that proposed it: `baseline`, `gpu_layers`, `threads`, `batch`, `kv_type`.
    pub stage: String,
    /// Why Debug proposed it.
    pub why: String,
    /// The settings it ran (or would have run) with.
    pub config: TuneConfig,
    /// How it ended.
    pub verdict: TrialVerdict,
    /// What happened, in words (the failure, the limit, the prediction).
    #[serde(default)]
    pub note: String,
    /// Engine memory Debug predicted for it, bytes.
    #[serde(default)]
    pub predicted_ram_bytes: Option<u64>,
    /// Client-measured decode tokens/s over its repetitions.
    #[serde(default)]
    pub decode_tps: Option<Stat>,
    /// The engine's prefill tokens/s.
    #[serde(default)]
    pub prefill_tps: Option<Stat>,
    /// Time to first token, ms.
    #[serde(default)]
    pub ttft_ms: Option<Stat>,
    /// Peak engine RAM, bytes.
    #[serde(default)]
    pub peak_ram_bytes: Option<u64>,
    /// Peak VRAM, bytes.
    #[serde(default)]
    pub peak_vram_bytes: Option<u64>,
    /// Peak GPU temperature, °C.
    #[serde(default)]
    pub peak_temp_c: Option<f64>,
    /// Seconds the trial took (start, warm-up, runs, stop).
    #[serde(default)]
    pub seconds: f64,
}

impl Trial {
    /// The goal's figure (decode tokens/s or TTFT ms), when measured.
    pub fn figure(&self, goal: TuneGoal) -> Option<&Stat> {
        match goal {
            TuneGoal::DecodeTps => self.decode_tps.as_ref(),
            TuneGoal::Ttft => self.ttft_ms.as_ref(),
        }
    }
}

/// What Debug knows about the model and host when it proposes (from the Reader's verdict and
/// facts, and the model's measurement).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TuneEvidence {
    /// The settings as planned (the baseline).
    pub planned: TuneConfig,
    /// The context the model runs with.
    pub context: u32,
    /// Logical CPUs of the host.
    pub cpus: u32,
    /// GPUs of the host.
    pub gpus: u32,
    /// Free VRAM of the first GPU at verification, bytes.
    #[serde(default)]
    pub vram_free_bytes: Option<u64>,
    /// The model's layers (the Reader's count, output layer included).
    #[serde(default)]
    pub layers_total: Option<u32>,
    /// Layers the Reader predicted fit on the GPU.
    #[serde(default)]
    pub predicted_gpu_layers: Option<u32>,
    /// Predicted weights, bytes.
    #[serde(default)]
    pub weights_bytes: Option<u64>,
    /// Predicted KV cache at the planned settings, bytes.
    #[serde(default)]
    pub kv_bytes: Option<u64>,
    /// Predicted compute buffers at the planned batch, bytes.
    #[serde(default)]
    pub compute_bytes: Option<u64>,
    /// Predicted engine RAM at the planned settings, bytes.
    #[serde(default)]
    pub predicted_ram_bytes: Option<u64>,
    /// Peak engine RAM the model's measurement saw, bytes.
    #[serde(default)]
    pub measured_ram_bytes: Option<u64>,
    /// The memory limit candidates must respect, bytes.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// The highest GPU temperature a trial may reach, °C.
    #[serde(default)]
    pub max_temp_c: Option<f64>,
}

/// Writer → Debug: the search so far; propose what to try next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneRequest {
    /// Model name.
    pub model: String,
    /// The model's place in the plan.
    pub index: u32,
    /// The round, from 1 (one request per round).
    pub round: u32,
    /// The plan's `[tune]` section.
    pub spec: TuneSpec,
    /// The evidence.
    pub evidence: TuneEvidence,
    /// Every trial so far, in order (skipped ones included).
    pub trials: Vec<Trial>,
    /// Seconds of tuning so far.
    pub elapsed_s: f64,
    /// The operator stopped the tuning (`cancel --tuning`): Debug concludes from the trials so
    /// far, with this as the reason, and proposes nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

/// The end of a search: the winner against the baseline.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TuneConclusion {
    /// The winning trial's number; the baseline's when nothing beat it beyond noise.
    pub winner: Option<u32>,
    /// The baseline trial's number.
    pub baseline: Option<u32>,
    /// The winner's gain on the goal's figure, % (positive is better for either goal).
    pub gain_pct: Option<f64>,
    /// The noise the gain is held against: the two trials' standard deviations combined, % of
    /// the baseline.
    pub noise_pct: Option<f64>,
    /// Why the search ended and what it found, in words.
    pub outcome: String,
}

/// Debug's answer to one `tune_request`: the next candidate, or the conclusion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneProposal {
    /// The request's package id.
    pub request: String,
    /// The cycle.
    pub cycle: String,
    /// The model.
    pub model: String,
    /// The candidate to measure next; `None` when the search is over.
    pub next: Option<Trial>,
    /// Candidates considered and not tried this round (predicted not to fit).
    #[serde(default)]
    pub skipped: Vec<Trial>,
    /// Stages passed over, with the reason (e.g. no GPU: GPU layers not searched).
    #[serde(default)]
    pub notes: Vec<String>,
    /// When the search is over: the winner.
    #[serde(default)]
    pub conclusion: Option<TuneConclusion>,
    /// When Debug decided (RFC 3339).
    pub decided_at: String,
}

/// A model's tuning, as stored in its result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TuneResult {
    /// What was optimised.
    pub goal: TuneGoal,
    /// The prompt trials answered.
    pub prompt: String,
    /// Measured repetitions per trial.
    pub repetitions: u32,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
    /// Stages passed over, with the reason.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The winner against the baseline; `None` when the search was stopped before Debug
    /// concluded.
    #[serde(default)]
    pub conclusion: Option<TuneConclusion>,
    /// Why the search stopped early (the operator's cancel, no answer from Debug).
    #[serde(default)]
    pub stopped: Option<String>,
    /// The winner restored at the end and measured once more.
    #[serde(default)]
    pub confirmation: Option<Trial>,
    /// Exactly how the engine was started with the winner's settings: the deployment guide's
    /// command.
    #[serde(default)]
    pub launch: Option<Launch>,
}

impl TuneResult {
    /// The trial with this number.
    pub fn trial(&self, number: u32) -> Option<&Trial> {
        self.trials.iter().find(|t| t.number == number)
    }

    /// The winning trial, when one was concluded and is not the baseline.
    pub fn winner_beats_baseline(&self) -> Option<&Trial> {
        let c = self.conclusion.as_ref()?;
        c.winner.filter(|w| Some(*w) != c.baseline).and_then(|w| self.trial(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantized_kv_cache_brings_flash_attention() {
        let c = TuneConfig { threads: Some(2), kv_type: Some(KvCacheType::Q8_0), ..Default::default() };
        assert_eq!(
            c.changes(),
            vec![
                Setting::Threads(2),
                Setting::KvCacheType(KvCacheType::Q8_0),
                Setting::FlashAttention(FlashAttention::On)
            ]
        );
        assert_eq!(c.describe(), "GPU layers default, threads 2, batch default, KV q8_0");
        let f16 = TuneConfig { kv_type: Some(KvCacheType::F16), ..Default::default() };
        assert_eq!(f16.changes(), vec![Setting::KvCacheType(KvCacheType::F16)]);
    }

    #[test]
    fn an_old_model_result_without_tuning_still_parses() {
        let r: TuneResult = serde_json::from_str(r#"{"goal":"ttft","prompt":"p","repetitions":2,"trials":[]}"#)
            .expect("defaults fill the rest");
        assert_eq!(r.goal, TuneGoal::Ttft);
        assert!(r.conclusion.is_none() && r.launch.is_none());
    }
}
