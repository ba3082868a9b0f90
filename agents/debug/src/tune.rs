//! The tuning search: a pure planner that, from the evidence and the trials so far, proposes the
//! next candidate or concludes. The Writer measures what it proposes; it never chooses.
//!
//! The search is staged and bounded, so a reader can follow it: the baseline (the plan's
//! settings on the same short runs), then GPU layers (the largest count that fits, by bisection;
//! skipped on a host without a GPU), then threads (the physical cores, then every logical CPU),
//! then batch size (half, four times, the whole context), then the KV cache type (q8_0 against
//! f16). Each stage starts from the best configuration measured so far; a candidate predicted
//! not to fit is recorded as skipped and not tried; a failed candidate is recorded and the search
//! goes on from the best one. The same history always gives the same proposal.

use protocol::plan::{TuneGoal, TuneKnob};
use protocol::results::Stat;
use protocol::settings::KvCacheType;
use protocol::tune::{Trial, TrialVerdict, TuneConclusion, TuneConfig, TuneEvidence, TuneRequest};

/// The batch size threadcycle assumes when the plan sets none (the fit prediction's default).
pub const DEFAULT_BATCH: u32 = 512;

const GIB: f64 = (1u64 << 30) as f64;

/// What the planner decided this round.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The candidate to measure next; `None` when the search is over.
    pub next: Option<Trial>,
    /// Candidates passed over this round because they are predicted not to fit.
    pub skipped: Vec<Trial>,
    /// Stages passed over and why.
    pub notes: Vec<String>,
    /// The conclusion when the search is over.
    pub conclusion: Option<TuneConclusion>,
}

fn candidate(number: u32, stage: TuneKnob, why: String, config: TuneConfig) -> Trial {
    Trial {
        number,
        stage: stage.as_str().into(),
        why,
        config,
        verdict: TrialVerdict::Measured,
        note: String::new(),
        predicted_ram_bytes: None,
        decode_tps: None,
        prefill_tps: None,
        ttft_ms: None,
        peak_ram_bytes: None,
        peak_vram_bytes: None,
        peak_temp_c: None,
        seconds: 0.0,
    }
}

/// Whether `a` is better than `b` for the goal (means compared; ties keep `b`, the earlier).
fn better(goal: TuneGoal, a: &Stat, b: &Stat) -> bool {
    match goal {
        TuneGoal::DecodeTps => a.mean > b.mean,
        TuneGoal::Ttft => a.mean < b.mean,
    }
}

/// The best trial that may win: measured within the limits, best on the goal, earliest on a tie.
pub fn best(goal: TuneGoal, trials: &[Trial]) -> Option<&Trial> {
    let mut out: Option<&Trial> = None;
    for t in trials.iter().filter(|t| t.verdict == TrialVerdict::Measured) {
        let Some(f) = t.figure(goal) else { continue };
        if out.and_then(|o| o.figure(goal)).is_none_or(|o| better(goal, f, o)) {
            out = Some(t);
        }
    }
    out
}

/// Engine memory predicted for `c`, bytes: the baseline's (measured, else predicted) plus the
/// compute buffers scaled with the batch (they grow linearly with it, up to the context) plus
/// the KV cache scaled with its element size. `None` when nothing is known to start from.
pub fn predicted_ram(ev: &TuneEvidence, c: &TuneConfig) -> Option<u64> {
    let base = ev.measured_ram_bytes.or(ev.predicted_ram_bytes)? as f64;
    let ctx = ev.context.max(1);
    let eff = |b: Option<u32>| f64::from(b.unwrap_or(DEFAULT_BATCH).clamp(1, ctx));
    let compute = ev.compute_bytes.unwrap_or(0) as f64 * (eff(c.batch) / eff(ev.planned.batch) - 1.0);
    let bpe = |k: Option<KvCacheType>| k.unwrap_or(KvCacheType::F16).bytes_per_element();
    let kv = ev.kv_bytes.unwrap_or(0) as f64 * (bpe(c.kv_type) / bpe(ev.planned.kv_type) - 1.0);
    Some((base + compute + kv).max(0.0) as u64)
}

/// VRAM predicted for `n` layers on the GPU, bytes: that share of the weights and KV cache, and
/// the compute buffers.
fn predicted_vram(ev: &TuneEvidence, n: u32) -> Option<u64> {
    let total = f64::from(ev.layers_total?.max(1));
    let share = f64::from(n.min(ev.layers_total?)) / total;
    let w = ev.weights_bytes? as f64;
    Some(((w + ev.kv_bytes.unwrap_or(0) as f64) * share + ev.compute_bytes.unwrap_or(0) as f64) as u64)
}

/// Why `c` is predicted not to fit, if it is.
fn will_not_fit(req: &TuneRequest, c: &TuneConfig) -> (Option<u64>, Option<String>) {
    let ev = &req.evidence;
    let ram = predicted_ram(ev, c);
    if let (Some(p), Some(limit)) = (ram, ev.memory_limit_bytes)
        && p > limit
    {
        return (
            ram,
            Some(format!(
                "predicted {:.2} GiB of engine memory, above the limit of {:.2} GiB (the baseline's {:.2} GiB, compute buffers scaled with the batch, KV cache with its type)",
                p as f64 / GIB,
                limit as f64 / GIB,
                ev.measured_ram_bytes.or(ev.predicted_ram_bytes).unwrap_or(0) as f64 / GIB
            )),
        );
    }
    if let (Some(n), Some(free)) = (c.gpu_layers.and_then(|n| u32::try_from(n).ok()), ev.vram_free_bytes) {
        let headroom = (req.spec.vram_headroom_gb.unwrap_or(0.0) * GIB) as u64;
        if let Some(need) = predicted_vram(ev, n)
            && need > free.saturating_sub(headroom)
        {
            return (
                ram,
                Some(format!(
                    "{n} layers need a predicted {:.2} GiB of VRAM; {:.2} GiB is free and {:.2} GiB must stay free",
                    need as f64 / GIB,
                    free as f64 / GIB,
                    headroom as f64 / GIB
                )),
            );
        }
    }
    (ram, None)
}

/// The candidates of one stage around `from`, in the order they are tried, each with why.
fn stage_candidates(
    req: &TuneRequest,
    history: &[Trial],
    knob: TuneKnob,
    from: &TuneConfig,
    notes: &mut Vec<String>,
) -> Vec<(TuneConfig, String)> {
    let ev = &req.evidence;
    match knob {
        TuneKnob::GpuLayers => gpu_layer_candidates(req, history, from, notes),
        TuneKnob::Threads => {
            let cpus = ev.cpus.max(1);
            let physical = (cpus / 2).max(1);
            let mut out = vec![(
                TuneConfig { threads: Some(physical), ..*from },
                format!(
                    "threads = the physical cores ({physical}: half of {cpus} logical CPUs, two threads per core assumed); decode is memory-bound, so extra threads often only contend"
                ),
            )];
            out.push((TuneConfig { threads: Some(cpus), ..*from }, format!("threads = every logical CPU ({cpus})")));
            out
        }
        TuneKnob::Batch => {
            // Values around the plan's batch, so the candidates stay the same whatever won.
            let base = ev.planned.batch.unwrap_or(DEFAULT_BATCH);
            let ctx = ev.context.max(1);
            let mut out = Vec::new();
            for (b, why) in [
                ((base / 2).max(32), format!("batch halved ({base} → {})", (base / 2).max(32))),
                (
                    base.saturating_mul(4),
                    format!("batch × 4 ({base} → {}): fewer, larger prompt steps", base.saturating_mul(4)),
                ),
                (ctx, format!("batch = the context ({ctx}): the whole prompt in one step, the most compute memory")),
            ] {
                if b <= ctx && b != base && !out.iter().any(|(c, _): &(TuneConfig, String)| c.batch == Some(b)) {
                    out.push((TuneConfig { batch: Some(b), ..*from }, why));
                }
            }
            out
        }
        TuneKnob::KvType => {
            let (to, why) = match ev.planned.kv_type.unwrap_or(KvCacheType::F16) {
                KvCacheType::F16 => (
                    KvCacheType::Q8_0,
                    "KV cache q8_0 (half of f16, with flash attention): less memory to read per token",
                ),
                _ => (KvCacheType::F16, "KV cache f16: no dequantisation per token"),
            };
            vec![(TuneConfig { kv_type: Some(to), ..*from }, why.to_string())]
        }
    }
}

/// GPU layers: the Reader's predicted count first (less what the VRAM headroom needs), then
/// bisection between the largest count that ran and the smallest that did not.
fn gpu_layer_candidates(
    req: &TuneRequest,
    history: &[Trial],
    from: &TuneConfig,
    notes: &mut Vec<String>,
) -> Vec<(TuneConfig, String)> {
    let ev = &req.evidence;
    if ev.gpus == 0 {
        notes.push("GPU layers not searched: the host has no GPU".into());
        return Vec::new();
    }
    let Some(total) = ev.layers_total.filter(|n| *n > 0) else {
        notes.push("GPU layers not searched: the model's layer count is not known".into());
        return Vec::new();
    };
    let tried = |ok: bool| {
        history
            .iter()
            .filter(|t| {
                (t.stage == "gpu_layers" || t.stage == "baseline")
                    && (t.verdict == TrialVerdict::Measured) == ok
                    && t.verdict != TrialVerdict::Canceled
            })
            .filter_map(|t| t.config.gpu_layers.and_then(|n| u32::try_from(n).ok()))
            .collect::<Vec<u32>>()
    };
    let good = tried(true).into_iter().max();
    let bad = tried(false).into_iter().min();
    let at = |n: u32, why: String| vec![(TuneConfig { gpu_layers: Some(n as i32), ..*from }, why)];
    let predicted = ev.predicted_gpu_layers.unwrap_or(total).min(total);
    if !history.iter().any(|t| t.stage == "gpu_layers") && from.gpu_layers != Some(predicted as i32) {
        return at(predicted, format!("GPU layers = {predicted} of {total}, the Reader's predicted largest that fits"));
    }
    match (good, bad) {
        (Some(g), None) if g < total => at(total, format!("GPU layers = all {total}: {g} ran, try everything")),
        (None, Some(b)) if b > 0 => at(b / 2, format!("GPU layers = {} (bisection: {b} did not run)", b / 2)),
        (Some(g), Some(b)) if b > g + 1 => {
            let mid = g + (b - g) / 2;
            at(mid, format!("GPU layers = {mid} (bisection between {g}, which ran, and {b}, which did not)"))
        }
        _ => Vec::new(),
    }
}

/// Decides the next step of the search.
pub fn propose(req: &TuneRequest) -> Plan {
    let spec = &req.spec;
    let goal = spec.goal;
    let mut notes = Vec::new();
    let mut skipped = Vec::new();
    let mut number = req.trials.len() as u32 + 1;
    let done = |outcome: String, notes: Vec<String>, skipped: Vec<Trial>| Plan {
        next: None,
        skipped,
        notes,
        conclusion: Some(conclude(goal, &req.trials, outcome)),
    };
    if let Some(why) = &req.stop {
        return done(why.clone(), notes, skipped);
    }
    let Some(baseline) = req.trials.iter().find(|t| t.stage == "baseline") else {
        let why = "the plan's settings, measured with the tuning protocol so every candidate is compared on the same short runs".to_string();
        let mut t = candidate(number, TuneKnob::Threads, why, req.evidence.planned);
        t.stage = "baseline".into();
        t.predicted_ram_bytes = predicted_ram(&req.evidence, &t.config);
        return Plan { next: Some(t), skipped, notes, conclusion: None };
    };
    if baseline.verdict != TrialVerdict::Measured {
        return done(
            format!("stopped: the baseline itself did not measure ({}): {}", baseline.verdict.as_str(), baseline.note),
            notes,
            skipped,
        );
    }
    let tried = req.trials.iter().filter(|t| t.verdict != TrialVerdict::Skipped).count() as u32;
    if tried >= spec.max_trials {
        return done(format!("trial budget used: {tried} of {} trials measured", spec.max_trials), notes, skipped);
    }
    if req.elapsed_s >= spec.max_minutes * 60.0 {
        return done(
            format!("time budget used: {:.1} of {} minutes", req.elapsed_s / 60.0, spec.max_minutes),
            notes,
            skipped,
        );
    }
    let from = best(goal, &req.trials).map_or(baseline.config, |t| t.config);
    // Stages run in order: never go back to a stage before the latest trial's.
    let stages: Vec<TuneKnob> = TuneKnob::ORDER.into_iter().filter(|k| spec.vary.contains(k)).collect();
    let current = req.trials.iter().rev().find_map(|t| stages.iter().position(|k| k.as_str() == t.stage)).unwrap_or(0);
    for (at, knob) in stages.iter().enumerate() {
        // Candidates are recomputed after each skip: bisection goes on below a count that is
        // predicted not to fit.
        loop {
            let mut history = req.trials.clone();
            history.extend(skipped.iter().cloned());
            let mut stage_notes = Vec::new();
            let cands = stage_candidates(req, &history, *knob, &from, &mut stage_notes);
            for n in stage_notes {
                if !notes.contains(&n) {
                    notes.push(n);
                }
            }
            if at < current {
                break;
            }
            let Some((config, why)) =
                cands.into_iter().find(|(c, _)| *c != from && !history.iter().any(|t| t.config == *c))
            else {
                break;
            };
            let (ram, no_fit) = will_not_fit(req, &config);
            let mut t = candidate(number, *knob, why, config);
            t.predicted_ram_bytes = ram;
            number += 1;
            match no_fit {
                Some(reason) => {
                    t.verdict = TrialVerdict::Skipped;
                    t.note = reason;
                    skipped.push(t);
                }
                None => return Plan { next: Some(t), skipped, notes, conclusion: None },
            }
        }
    }
    let names: Vec<&str> = stages.iter().map(|k| k.as_str()).collect();
    done(format!("search complete: every stage tried ({})", names.join(", ")), notes, skipped)
}

/// The winner against the baseline: the best measured trial when it beats the baseline by more
/// than the noise (the two trials' standard deviations combined), else the baseline, kept.
pub fn conclude(goal: TuneGoal, trials: &[Trial], why_stopped: String) -> TuneConclusion {
    let baseline = trials.iter().find(|t| t.stage == "baseline" && t.verdict == TrialVerdict::Measured);
    let (Some(base), Some(base_f)) = (baseline, baseline.and_then(|b| b.figure(goal))) else {
        return TuneConclusion {
            outcome: format!("{why_stopped}; no baseline was measured, so no winner"),
            ..Default::default()
        };
    };
    let Some(top) = best(goal, trials) else {
        return TuneConclusion {
            baseline: Some(base.number),
            winner: Some(base.number),
            outcome: why_stopped,
            ..Default::default()
        };
    };
    let top_f = top.figure(goal).unwrap_or(base_f);
    let scale = base_f.mean.abs().max(f64::MIN_POSITIVE);
    let gain = match goal {
        TuneGoal::DecodeTps => (top_f.mean - base_f.mean) / scale * 100.0,
        TuneGoal::Ttft => (base_f.mean - top_f.mean) / scale * 100.0,
    };
    let noise = (base_f.stddev.powi(2) + top_f.stddev.powi(2)).sqrt() / scale * 100.0;
    let unit = match goal {
        TuneGoal::DecodeTps => "tokens/s",
        TuneGoal::Ttft => "ms TTFT",
    };
    if top.number != base.number && gain > noise {
        TuneConclusion {
            winner: Some(top.number),
            baseline: Some(base.number),
            gain_pct: Some(gain),
            noise_pct: Some(noise),
            outcome: format!(
                "{why_stopped}. Winner: trial {} ({}), {:.1} against the baseline's {:.1} {unit}: {gain:+.1} % (noise ±{noise:.1} %)",
                top.number,
                top.config.describe(),
                top_f.mean,
                base_f.mean
            ),
        }
    } else {
        let detail = if top.number == base.number {
            "no candidate measured better".to_string()
        } else {
            format!("the best candidate, trial {} ({:+.1} %), is within the noise (±{noise:.1} %)", top.number, gain)
        };
        TuneConclusion {
            winner: Some(base.number),
            baseline: Some(base.number),
            gain_pct: Some(if top.number == base.number { 0.0 } else { gain }),
            noise_pct: Some(noise),
            outcome: format!("{why_stopped}. Baseline kept: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests;
