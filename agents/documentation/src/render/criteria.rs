//! The plan's success criteria held against the measurements: one row per model and
//! threshold, with the verdict, and the table the summary and the benchmark report show.

use super::format::{GIB, gib, num, plain};
use super::view::{View, outcome};
use crate::markdown::{cell, table};
use protocol::plan::{Criteria, CriterionKind, Plan};
use protocol::results::{EscalationRecord, FailureClass, HostFacts, MetricSummary, TelemetrySummary};
use std::fmt::Write as _;

/// Verdict of one success criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    Fail,
    NotMeasured,
    /// The threshold does not apply (e.g. a memory limit where none is in force).
    NotApplicable,
}

impl Verdict {
    pub(super) fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "**PASS**",
            Verdict::Fail => "**FAIL**",
            Verdict::NotMeasured => "NOT MEASURED",
            Verdict::NotApplicable => "N/A",
        }
    }
}

/// One row of the success-criteria table; text fields are markdown already.
pub(super) struct Criterion {
    pub(super) what: String,
    pub(super) threshold: String,
    pub(super) measured: String,
    pub(super) verdict: Verdict,
}

/// The finding on a GPU figure of a model's telemetry: `judge` when it was sampled, else why not.
pub(super) fn gpu_figure(
    v: &View,
    host_note: Option<&str>,
    figure: Option<MetricSummary>,
    missing: &str,
    judge: impl FnOnce(&TelemetrySummary, MetricSummary) -> (String, Verdict),
) -> (String, Verdict) {
    match (v.tel(), figure) {
        _ if !v.measured() => (outcome(v), Verdict::NotMeasured),
        (Some(t), Some(m)) => judge(t, m),
        (Some(_), None) => {
            (format!("not measured: {}", v.no_gpu(host_note).unwrap_or_else(|| missing.into())), Verdict::NotMeasured)
        }
        (None, _) => ("no telemetry was recorded during the runs".into(), Verdict::NotMeasured),
    }
}

/// The verdict of `measured` against `limit` under the criterion's one rule (the Reader's checks
/// use the same, `protocol::plan::Criteria::rule`).
fn judged(kind: CriterionKind, measured: f64, limit: f64) -> Verdict {
    if Criteria::rule(kind).holds(measured, limit) { Verdict::Pass } else { Verdict::Fail }
}

fn symbol(kind: CriterionKind) -> &'static str {
    Criteria::rule(kind).symbol()
}

/// Every criterion the plan sets, for every model: decode speed, memory within the limit, GPU
/// utilisation, sustained temperature, then the idle temperature of the host.
pub(super) fn criteria(
    plan: &Plan,
    host: &HostFacts,
    views: &[View],
    escalations: &[&EscalationRecord],
) -> Vec<Criterion> {
    let c = &plan.criteria;
    let host_note = host.gpu_note.as_deref();
    let mut out = Vec::new();
    if let Some(min) = c.min_decode_tps {
        out.extend(views.iter().map(|v| decode_speed(v, min)));
    }
    if c.memory_within_limits == Some(true) {
        out.extend(views.iter().map(|v| memory_within_limit(v, escalations)));
    }
    if let Some(min) = c.min_gpu_util_pct {
        out.extend(views.iter().map(|v| gpu_utilisation(v, host_note, min)));
    }
    if let Some(max) = c.max_temp_c {
        out.extend(views.iter().map(|v| sustained_temperature(v, host_note, max)));
    }
    if let Some(max) = c.max_idle_temp_c {
        out.push(idle_temperature(host, max));
    }
    out
}

/// Decode speed against the plan's minimum.
fn decode_speed(v: &View, min: f64) -> Criterion {
    let (measured, verdict) = match v.all.decode() {
        Some((tps, src)) => (format!("{} tok/s ({src})", num(tps)), judged(CriterionKind::DecodeSpeed, tps, min)),
        None => (outcome(v), Verdict::NotMeasured),
    };
    Criterion {
        what: format!("Decode speed — {}", v.name()),
        threshold: format!("{} {} tok/s", symbol(CriterionKind::DecodeSpeed), plain(min)),
        measured,
        verdict,
    }
}

/// Peak engine memory against the limit in force, noting any attempt the OOM killer stopped.
fn memory_within_limit(v: &View, escalations: &[&EscalationRecord]) -> Criterion {
    let oom: Vec<u32> = escalations
        .iter()
        .filter(|e| e.model == v.r.model && e.class == FailureClass::OomKilled)
        .map(|e| e.attempt)
        .collect();
    let note = if oom.is_empty() {
        String::new()
    } else {
        format!("; attempt {} was OOM-killed first", oom.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
    };
    // The sampler's peak and the limit it saw in force; the Writer's peak and the
    // planned limit when there is no telemetry.
    let sampled = v.tel().and_then(|t| t.engine_mem_bytes);
    let peak = sampled.map(|m| m.peak).or(v.peak_ram().map(|b| b as f64));
    let limit = if v.host_process() {
        None
    } else {
        v.tel().and_then(|t| t.engine_mem_limit).map(gib).or(v.settings.as_ref().and_then(|s| s.set.memory_limit_gb))
    };
    let what = if sampled.is_some() { format!("peak {} (sampled)", v.mem_kind()) } else { "peak".to_string() };
    let (measured, verdict) = match (peak, limit) {
        _ if !v.measured() => (outcome(v), Verdict::NotMeasured),
        (Some(p), Some(l)) => (
            format!("{what} {} GiB of {} GiB{note}", num(p / GIB), plain(l)),
            if p / GIB <= l { Verdict::Pass } else { Verdict::Fail },
        ),
        (Some(p), None) if v.host_process() => (
            format!("{what} {} GiB; a host process runs under no container limit{note}", num(p / GIB)),
            Verdict::NotApplicable,
        ),
        (Some(p), None) => (format!("{what} {} GiB; no limit was set{note}", num(p / GIB)), Verdict::NotApplicable),
        (None, _) => (format!("no memory peak was recorded{note}"), Verdict::NotMeasured),
    };
    Criterion {
        what: format!("Memory within the container limit — {}", v.name()),
        threshold: match limit {
            Some(l) => format!("≤ {} GiB", plain(l)),
            None if v.host_process() => "no limit (host process)".into(),
            None => "the limit in force".into(),
        },
        measured,
        verdict,
    }
}

/// Mean GPU utilisation over the measured runs against the plan's minimum.
fn gpu_utilisation(v: &View, host_note: Option<&str>, min: f64) -> Criterion {
    let util = v.tel().and_then(|t| t.gpu_util_pct);
    let (measured, verdict) = gpu_figure(v, host_note, util, "the GPU reported no utilisation", |_, u| {
        (
            format!("mean {} % over the measured runs (peak {} %, {} samples)", num(u.mean), num(u.peak), u.samples),
            judged(CriterionKind::GpuUtilisation, u.mean, min),
        )
    });
    Criterion {
        what: format!("GPU utilisation while generating — {}", v.name()),
        threshold: format!("{} {} % (mean)", symbol(CriterionKind::GpuUtilisation), plain(min)),
        measured,
        verdict,
    }
}

/// Peak GPU temperature over the measured runs against the plan's maximum.
fn sustained_temperature(v: &View, host_note: Option<&str>, max: f64) -> Criterion {
    let temp = v.tel().and_then(|t| t.gpu_temp_c);
    let (measured, verdict) = gpu_figure(v, host_note, temp, "the GPU reported no temperature", |t, temp| {
        (
            format!("peak {} °C, mean {} °C; {}", num(temp.peak), num(temp.mean), pauses_text(t)),
            judged(CriterionKind::SustainedTemperature, temp.peak, max),
        )
    });
    Criterion {
        what: format!("Sustained GPU temperature — {}", v.name()),
        threshold: format!("{} {} °C (peak)", symbol(CriterionKind::SustainedTemperature), plain(max)),
        measured,
        verdict,
    }
}

/// The hottest GPU at host verification, before any model was loaded, against the plan's maximum.
fn idle_temperature(host: &HostFacts, max: f64) -> Criterion {
    let temps: Vec<u32> = host.gpus.iter().filter_map(|g| g.temperature_c).collect();
    let (measured, verdict) = match temps.iter().max() {
        Some(&t) => (
            format!("{t} °C at host verification, before any model was loaded"),
            judged(CriterionKind::IdleTemperature, f64::from(t), max),
        ),
        None => (
            host.gpu_note.as_deref().map(cell).unwrap_or_else(|| "no GPU temperature was reported".into()),
            Verdict::NotMeasured,
        ),
    };
    Criterion {
        what: "Idle GPU temperature".into(),
        threshold: format!("{} {} °C", symbol(CriterionKind::IdleTemperature), plain(max)),
        measured,
        verdict,
    }
}

/// The thermal guard's pauses in words: "no thermal pause", or how many and how long.
pub(super) fn pauses_text(t: &TelemetrySummary) -> String {
    let p = &t.thermal_pauses;
    if p.is_empty() {
        return "no thermal pause".into();
    }
    let waited: f64 = p.iter().map(|x| x.waited_s).sum();
    let unrecovered = p.iter().filter(|x| !x.recovered).count();
    format!(
        "{} thermal pause{} ({} s in all{})",
        p.len(),
        if p.len() == 1 { "" } else { "s" },
        plain(waited.round()),
        if unrecovered > 0 {
            format!(", {unrecovered} without cooling to the resume threshold")
        } else {
            String::new()
        }
    )
}

/// The criteria as a table, with the resume temperature the plan sets, if any.
pub(super) fn criteria_table(criteria: &[Criterion], plan: &Plan) -> String {
    let rows: Vec<Vec<String>> = criteria
        .iter()
        .map(|c| vec![c.what.clone(), c.threshold.clone(), c.measured.clone(), c.verdict.word().to_string()])
        .collect();
    let mut s = table(&["Criterion", "Threshold", "Measured", "Verdict"], &[], &rows);
    if let Some(t) = plan.criteria.resume_temp_c {
        let _ =
            write!(s, "\nA paused run resumes when the GPU cools to {} °C (a setting, not a criterion).\n", plain(t));
    }
    s
}
