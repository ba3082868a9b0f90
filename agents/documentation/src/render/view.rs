//! One model as the reports see it: its results, its plan entry and fit verdict, the figures
//! over its runs, the settings it was measured with, and what its energy cost per token.

use crate::markdown::{cell, cell_short};
use protocol::plan::{ModelSpec, Plan, Runtime};
use protocol::results::{FitVerdict, ModelResult, ModelStatus, RunResult, Stat, TelemetrySummary};
use protocol::settings::{Setting, Settings as RunSettings};

/// Mean, spread and count of each figure over a set of runs.
#[derive(Debug, Clone, Default)]
pub(super) struct Figures {
    pub(super) ttft_ms: Option<Stat>,
    pub(super) e2e_ms: Option<Stat>,
    pub(super) tpot_ms: Option<Stat>,
    pub(super) client_tps: Option<Stat>,
    pub(super) engine_tps: Option<Stat>,
    pub(super) prefill_tps: Option<Stat>,
    pub(super) tokens: Option<Stat>,
    pub(super) words: Option<Stat>,
}

impl Figures {
    pub(super) fn of(runs: &[&RunResult], cv: f64) -> Self {
        let stat = |f: &dyn Fn(&RunResult) -> Option<f64>| {
            let xs: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
            Stat::of(&xs, cv)
        };
        Figures {
            ttft_ms: stat(&|r| Some(r.ttft_ms)),
            e2e_ms: stat(&|r| Some(r.e2e_ms)),
            tpot_ms: stat(&|r| r.tpot_ms),
            client_tps: stat(&|r| r.client_decode_tps),
            engine_tps: stat(&|r| r.engine_decode_tps),
            prefill_tps: stat(&|r| r.engine_prefill_tps),
            tokens: stat(&|r| Some(f64::from(r.output_tokens))),
            words: stat(&|r| Some(f64::from(r.analysis.words))),
        }
    }

    /// Decode tokens/s for costs and criteria: the client's figure, else the engine's.
    pub(super) fn decode(&self) -> Option<(f64, &'static str)> {
        self.client_tps
            .map(|s| (s.mean, "client-side"))
            .or_else(|| self.engine_tps.map(|s| (s.mean, "engine-reported")))
    }
}

/// The settings a model was measured with, as the Writer recorded them for the attempt that
/// succeeded (nothing here re-applies remedies); the plan's for a model with no attempt.
#[derive(Debug, Clone)]
pub(super) struct Effective {
    /// The settings.
    pub(super) set: RunSettings,
    /// The attempt that succeeded, if one did.
    pub(super) attempt: Option<u32>,
    /// Changes from the plan that attempt ran with, in order.
    pub(super) changes: Vec<Setting>,
}

impl Effective {
    pub(super) fn of(plan: &Plan, spec: &ModelSpec, r: &ModelResult) -> Self {
        let ok = r.attempts.iter().filter(|a| a.outcome.trim().eq_ignore_ascii_case("ok")).min_by_key(|a| a.number);
        let chosen = ok.or_else(|| {
            (r.status == ModelStatus::Measured).then(|| r.attempts.iter().max_by_key(|a| a.number)).flatten()
        });
        let mut attempt = chosen.map(|a| a.number);
        if attempt.is_none() && r.status == ModelStatus::Measured {
            attempt = Some(1);
        }
        Effective {
            set: chosen.and_then(|a| a.settings.clone()).unwrap_or_else(|| RunSettings::planned(plan, spec)),
            attempt,
            changes: chosen.map(|a| a.changes.clone()).unwrap_or_default(),
        }
    }
}

/// One model as the reports see it.
pub(super) struct View<'a> {
    pub(super) r: &'a ModelResult,
    /// The host it ran on, in a several-host cycle.
    pub(super) host: Option<&'a str>,
    pub(super) spec: Option<&'a ModelSpec>,
    pub(super) verdict: Option<&'a FitVerdict>,
    pub(super) all: Figures,
    pub(super) settings: Option<Effective>,
}

impl View<'_> {
    pub(super) fn measured(&self) -> bool {
        self.r.status == ModelStatus::Measured && !self.r.runs.is_empty()
    }

    /// Telemetry of a measured model.
    pub(super) fn tel(&self) -> Option<&TelemetrySummary> {
        self.r.telemetry.as_ref().filter(|_| self.measured())
    }

    /// Whether the engine ran as a host process (no container, so no memory limit).
    pub(super) fn host_process(&self) -> bool {
        self.spec.is_some_and(|s| s.runtime == Runtime::Process)
    }

    /// What the engine memory figure is: a container's working set or a process's RSS.
    pub(super) fn mem_kind(&self) -> &'static str {
        if self.host_process() { "RSS" } else { "working set" }
    }

    /// Peak engine memory: the Writer's figure, else the sampler's peak.
    pub(super) fn peak_ram(&self) -> Option<u64> {
        if !self.measured() {
            return None;
        }
        self.r.peak_ram_bytes.or_else(|| self.tel().and_then(|t| t.engine_mem_bytes).map(|m| m.peak.max(0.0) as u64))
    }

    /// Peak VRAM: the Writer's figure, else the sampler's peak of VRAM in use.
    pub(super) fn peak_vram(&self) -> Option<u64> {
        if !self.measured() {
            return None;
        }
        self.r.peak_vram_bytes.or_else(|| self.tel().and_then(|t| t.vram_used_bytes).map(|m| m.peak.max(0.0) as u64))
    }

    /// The weights' size as llama-bench's `size` column gives it (the model's tensor bytes): from
    /// the GGUF header when the Reader read one, else the engine's own account of its weight
    /// buffers when it was loaded; None for a recalled or estimated figure.
    pub(super) fn size_bytes(&self) -> Option<u64> {
        let header = self.verdict.filter(|f| f.source.starts_with("GGUF header")).and_then(|f| f.weights_bytes);
        let engine = || {
            let e = self.r.engine_memory.as_ref().filter(|_| self.measured())?;
            Some(e.weights.iter().map(|d| d.bytes).sum::<u64>())
        };
        header.or_else(engine).filter(|b| *b > 0)
    }

    /// Where the weights ran, named as llama-bench's `backend` column names it: `CUDA` when the
    /// engine put any weights or layers on the (NVIDIA) GPU, `CPU` when it put none there or the
    /// host has no GPU (no driver in the manifest); None when not measured or the engine did not
    /// say.
    pub(super) fn backend(&self) -> Option<&'static str> {
        if !self.measured() {
            return None;
        }
        let m = &self.r.manifest;
        let on_gpu = |yes: bool| if yes { "CUDA" } else { "CPU" };
        if let Some(share) = m.gpu_weight_share.filter(|x| (0.0..=1.0).contains(x)) {
            return Some(on_gpu(share > 0.0));
        }
        if m.driver.is_none() {
            return Some("CPU");
        }
        let layers: u32 = m.gpu_layers.as_deref()?.split('/').next()?.trim().parse().ok()?;
        Some(on_gpu(layers > 0))
    }

    /// Why the GPU figures are missing, when the sampler saw no GPU at all.
    pub(super) fn no_gpu(&self, host_note: Option<&str>) -> Option<String> {
        let t = self.tel()?;
        if t.gpu_util_pct.is_some() || t.gpu_temp_c.is_some() || t.gpu_power_w.is_some() || t.vram_used_bytes.is_some()
        {
            return None;
        }
        let note = t
            .notes
            .iter()
            .map(String::as_str)
            .find(|n| {
                let l = n.to_ascii_lowercase();
                l.contains("gpu") || l.contains("nvml") || l.contains("nvidia")
            })
            .or(host_note);
        Some(match note {
            Some(n) if n.to_ascii_lowercase().starts_with("no nvidia gpu") => cell(n),
            Some(n) => format!("no NVIDIA GPU ({})", cell(n)),
            None => "no NVIDIA GPU was sampled".to_string(),
        })
    }

    pub(super) fn name(&self) -> String {
        match self.host {
            Some(h) => format!("{} (host {})", cell(&self.r.model), cell(h)),
            None => cell(&self.r.model),
        }
    }

    /// Prompt ids in plan order, then any the plan does not list.
    pub(super) fn prompt_ids(&self, plan: &Plan) -> Vec<String> {
        let mut ids: Vec<String> = plan.prompts.iter().map(|p| p.id.clone()).collect();
        for r in &self.r.runs {
            if !ids.contains(&r.prompt_id) {
                ids.push(r.prompt_id.clone());
            }
        }
        ids.retain(|id| self.r.runs.iter().any(|r| &r.prompt_id == id));
        ids
    }

    pub(super) fn runs_of(&self, prompt: &str) -> Vec<&RunResult> {
        let mut v: Vec<&RunResult> = self.r.runs.iter().filter(|r| r.prompt_id == prompt).collect();
        v.sort_by_key(|r| r.repetition);
        v
    }
}

/// A model's outcome in words: measured (on which attempt), or why it failed or was skipped.
pub(super) fn outcome(v: &View) -> String {
    match &v.r.status {
        ModelStatus::Measured => match v.settings.as_ref().and_then(|s| s.attempt) {
            Some(n) if n > 1 => format!("measured (attempt {n})"),
            _ => "measured".to_string(),
        },
        ModelStatus::Failed { reason } => format!("failed: {}", cell_short(reason, 90)),
        ModelStatus::Skipped { reason } => format!("skipped: {}", cell_short(reason, 90)),
    }
}

/// A model's whole-box energy per output token and where each part came from.
pub(super) struct Energy {
    /// Whole-box power while generating, W (measured parts plus the assumed rest, or the
    /// assumed wall power).
    pub(super) watts: Option<f64>,
    pub(super) power_source: String,
    /// Whole-box energy per output token, J.
    pub(super) j_per_token: Option<f64>,
    pub(super) energy_source: String,
    /// Which parts were measured and which assumed, in words.
    pub(super) parts: Vec<String>,
}

/// Energy per output token of the whole box: the GPU as NVML measured it (its energy per token,
/// else its mean power over the decode speed), the CPU package as RAPL measured it, and the plan's
/// `rest_of_system_w` for everything else. With no part measured, the plan's assumed wall power.
pub(super) fn energy_of(v: &View, tps: f64, cost: &protocol::plan::CostInputs) -> Energy {
    let t = v.tel();
    let mut parts = Vec::new();
    let gpu = t.and_then(|t| match t.joules_per_token.filter(|j| j.is_finite()) {
        Some(j) => Some((j, format!("GPU measured by NVML ({})", t.energy_source.as_deref().map_or("energy", |s| s)))),
        None => t.gpu_power_w.map(|m| (m.mean / tps, "GPU measured by NVML (mean power ÷ decode speed)".to_string())),
    });
    let cpu = t.and_then(|t| {
        let j = t.cpu_joules_per_token.filter(|j| j.is_finite())?;
        Some((j, format!("CPU package measured by {}", t.cpu_energy_source.as_deref().unwrap_or("RAPL"))))
    });
    if gpu.is_none() && cpu.is_none() {
        return Energy {
            watts: cost.assumed_power_w,
            power_source: "assumed".into(),
            j_per_token: cost.assumed_power_w.map(|w| w / tps),
            energy_source: "from assumed power".into(),
            parts: vec![match cost.assumed_power_w {
                Some(w) => format!(
                    "whole box assumed at {} W (plan `cost.assumed_power_w`): nothing was measured",
                    super::format::plain(w)
                ),
                None => "nothing measured and no `cost.assumed_power_w`".into(),
            }],
        };
    }
    let what = match (gpu.is_some(), cpu.is_some()) {
        (true, true) => "measured GPU + CPU",
        (true, false) => "measured GPU",
        _ => "measured CPU",
    };
    let mut j = 0.0;
    for (part, missing) in [
        (gpu, "GPU not measured (no NVML energy or power)"),
        (cpu, "CPU package not measured (no readable RAPL counter): not counted"),
    ] {
        match part {
            Some((pj, what)) => {
                j += pj;
                parts.push(cell(&what));
            }
            None => parts.push(missing.into()),
        }
    }
    match cost.rest_of_system_w {
        Some(w) => {
            j += w / tps;
            parts.push(format!(
                "rest of the system assumed at {} W (plan `cost.rest_of_system_w`)",
                super::format::plain(w)
            ));
        }
        None => parts.push("rest of the system not counted (no `cost.rest_of_system_w`)".into()),
    }
    let rest = if cost.rest_of_system_w.is_some() { " + assumed rest" } else { "" };
    Energy {
        watts: Some(j * tps),
        power_source: format!("{what}{rest}"),
        j_per_token: Some(j),
        energy_source: format!("{what}{rest}"),
        parts,
    }
}

/// Whether a run's answer reached the engine client's cap (`protocol::results::MAX_ANSWER_BYTES`):
/// the client cuts on a character boundary, so within 3 bytes of it.
pub(super) fn answer_was_cut(r: &RunResult) -> bool {
    r.answer.as_ref().is_some_and(|b| b.size + 3 >= protocol::results::MAX_ANSWER_BYTES as u64)
}
