//! The claims ledger's rules, shared by the reports and `threadcycle plan check`: which claims a
//! plan makes, how a claimed range is held against a figure, and what the fit and decode-ceiling
//! predictions already say about a claim before anything runs.
//!
//! Pure functions of the plan and the Reader's predictions: no clock, no I/O.

use protocol::plan::{Bounds, ClaimMetric, CostInputs, Plan};
use protocol::results::{Fit, FitVerdict};

/// A single claimed figure ("27.3 GB") holds within this share of it either way: a document's
/// point figure is a rounded expectation, not an exact one.
pub const POINT_TOLERANCE: f64 = 0.05;

/// Bytes in a GiB; plans' "GB" are GiB, as Docker's memory limits are.
const GIB: f64 = 1_073_741_824.0;

/// One claim as the ledger checks it: a `[[claims]]` entry or a model's `projected` figure,
/// expanded to one model when it is about each model of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanClaim {
    /// The claim's words (untrusted: escape when rendering).
    pub text: String,
    /// What it is about.
    pub metric: ClaimMetric,
    /// The range it claims.
    pub expected: Bounds,
    /// The model it is about, for a per-model figure.
    pub model: Option<String>,
    /// The prompt whose answers it is about.
    pub prompt: Option<String>,
    /// Where the plan states it, e.g. `claims[3]` or `models[0].projected.ram_gb`.
    pub source: String,
}

/// Every claim the plan makes, in ledger order: the models' projected figures, then `[[claims]]`.
/// A per-model claim that names no model becomes one claim per model of the plan.
pub fn plan_claims(plan: &Plan) -> Vec<PlanClaim> {
    let mut out = Vec::new();
    for (i, m) in plan.models.iter().enumerate() {
        let p = &m.projected;
        for (metric, field, b, what) in [
            (ClaimMetric::RamGb, "ram_gb", p.ram_gb, "RAM"),
            (ClaimMetric::VramGb, "vram_gb", p.vram_gb, "VRAM"),
            (ClaimMetric::ResponseTimeS, "response_time_s", p.response_time_s, "response time"),
            (ClaimMetric::Words, "words", p.words, "words per answer"),
        ] {
            let Some(b) = b else { continue };
            out.push(PlanClaim {
                text: format!("projected {what} {}", figure(metric, &b)),
                metric,
                expected: b,
                model: Some(m.name.clone()),
                prompt: None,
                source: format!("models[{i}].projected.{field}"),
            });
        }
    }
    for (i, c) in plan.claims.iter().enumerate() {
        let Some(metric) = c.metric() else { continue };
        let models: Vec<Option<String>> = match &c.model {
            Some(m) => vec![Some(m.clone())],
            None if metric.per_model() && metric != ClaimMetric::BaselineImprovement => {
                plan.models.iter().map(|m| Some(m.name.clone())).collect()
            }
            None => vec![None],
        };
        for model in models {
            out.push(PlanClaim {
                text: c.text.clone(),
                metric,
                expected: c.expected,
                model,
                prompt: c.prompt.clone(),
                source: format!("claims[{i}]"),
            });
        }
    }
    out
}

/// A claimed range in words with its unit: "13–15 GB", "80+ %", "≤ 70 °C".
pub fn figure(metric: ClaimMetric, b: &Bounds) -> String {
    let unit = metric.unit();
    match (metric, b.min, b.max) {
        (ClaimMetric::BaselineImprovement, None, None) => "an improvement".into(),
        (ClaimMetric::UsdPerMtok | ClaimMetric::ReferenceUsdPerMtok, min, max) => {
            let price = match (min, max) {
                (Some(a), Some(b)) if a == b => format!("${a}"),
                (Some(a), Some(b)) => format!("${a}–{b}"),
                (Some(a), None) => format!("${a}+"),
                (None, Some(b)) => format!("≤ ${b}"),
                (None, None) => "—".into(),
            };
            format!("{price} per million tokens")
        }
        _ if unit.is_empty() => b.to_string(),
        _ => format!("{b} {unit}"),
    }
}

/// Whether a measured or predicted figure lies within the claimed range: [`Bounds::contains`],
/// with a single figure read as ± [`POINT_TOLERANCE`]. The one comparison rule of the ledger.
pub fn holds(expected: &Bounds, v: f64) -> bool {
    match (expected.min, expected.max) {
        (Some(a), Some(b)) if a == b => (v - a).abs() <= a.abs() * POINT_TOLERANCE,
        _ => expected.contains(v),
    }
}

/// What the ledger can say about a claim before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Foresight {
    /// A prediction already contradicts the claim (why, in words).
    Contradicted(String),
    /// The prediction is compatible with the claim (what it predicts).
    Consistent(String),
    /// An estimate (not a bound) disagrees with the claim: worth a look, not a contradiction.
    Differs(String),
    /// Only the run can tell (why).
    Unpredictable(String),
}

impl Foresight {
    /// The text, whatever the kind.
    pub fn text(&self) -> &str {
        match self {
            Foresight::Contradicted(t)
            | Foresight::Consistent(t)
            | Foresight::Differs(t)
            | Foresight::Unpredictable(t) => t,
        }
    }
}

/// The Reader's predictions for one host: each model's fit verdict and decode ceiling.
#[derive(Debug, Clone, Copy)]
pub struct Predictions<'a> {
    /// Fit verdicts of the plan's models.
    pub verdicts: &'a [FitVerdict],
    /// GPU and RAM bandwidth, decimal GB/s, for the decode ceiling.
    pub bandwidths: (Option<f64>, Option<f64>),
}

/// The decode speed memory bandwidth allows for a model's predicted GPU/CPU split of its
/// weights (the roofline), tokens/s; None for a no-go or when a figure is missing.
pub fn decode_ceiling(v: &FitVerdict, (gpu_bw, ram_bw): (Option<f64>, Option<f64>)) -> Option<f64> {
    if v.fit == Fit::NoGo {
        return None;
    }
    let (on_gpu, in_ram) = protocol::results::weights_split(v.weights_bytes?, v.predicted_gpu_share().unwrap_or(0.0));
    protocol::results::roofline_decode_tps(on_gpu, in_ram, gpu_bw, ram_bw)
}

/// Cost of a million output tokens at a decode speed, from the plan's cost inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MtokCost {
    /// Energy per million tokens, kWh (None without an energy figure).
    pub kwh: Option<f64>,
    /// Electricity per million tokens, USD.
    pub electricity: Option<f64>,
    /// Hardware written off per million tokens, USD (None when lifetime or hours are zero).
    pub hardware: Option<f64>,
    /// Both together, USD.
    pub total: Option<f64>,
}

/// Cost per million output tokens at `tps` decode with `j_per_token` joules per token: the
/// business case's formula (energy at the electricity price, plus the hardware written off
/// over its hours of use).
pub fn mtok_cost(cost: &CostInputs, tps: f64, j_per_token: Option<f64>) -> MtokCost {
    let kwh = j_per_token.map(|j| j * 1e6 / 3.6e6);
    let electricity = kwh.map(|k| k * cost.electricity_usd_per_kwh);
    let hours = cost.lifetime_years * 365.0 * cost.hours_per_day;
    let hardware = (hours > 0.0 && tps > 0.0).then(|| cost.hardware_usd / hours / (tps * 3600.0) * 1e6);
    let total = match (electricity, hardware) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    MtokCost { kwh, electricity, hardware, total }
}

/// Cost per million tokens at `ratio` prompt tokens per output token: the time r/(r+1) million
/// prompt tokens take at `prefill_tps` and 1/(r+1) million output tokens at `decode_tps`, paid at
/// `watts` for electricity and the hardware's rate per hour of use. `None` without a power figure,
/// a speed or hours of use.
pub fn mix_cost(cost: &CostInputs, decode_tps: f64, prefill_tps: f64, watts: Option<f64>, ratio: f64) -> Option<f64> {
    let w = watts.filter(|w| w.is_finite() && *w >= 0.0)?;
    let hours = cost.lifetime_years * 365.0 * cost.hours_per_day;
    if !(decode_tps > 0.0 && prefill_tps > 0.0 && hours > 0.0 && ratio.is_finite() && ratio >= 0.0) {
        return None;
    }
    let seconds = 1e6 * (ratio / (ratio + 1.0) / prefill_tps + 1.0 / (ratio + 1.0) / decode_tps);
    let per_hour = w / 1000.0 * cost.electricity_usd_per_kwh + cost.hardware_usd / hours;
    Some(per_hour * seconds / 3600.0)
}

/// A figure in the ledger: whole numbers as they are, else three significant digits at most.
pub fn num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        return format!("{v:.0}");
    }
    let a = v.abs();
    let d = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.d$}")
}

/// What the predictions say about `claim` (one of `all`, the plan's claims, which a words or
/// response-time claim is paired with).
///
/// Only bounds contradict a claim: the token cap, and the decode ceiling memory bandwidth sets
/// (which caps decode speed, words per second and so the cost floor). The fit prediction's RAM
/// and VRAM are estimates of what the engine needs, so where they disagree the claim only
/// [`Foresight::Differs`].
pub fn predict(plan: &Plan, claim: &PlanClaim, all: &[PlanClaim], p: &Predictions) -> Foresight {
    use Foresight::*;
    let e = &claim.expected;
    if let Some(why) = not_measurable(plan, claim) {
        return Unpredictable(why);
    }
    let verdict = claim.model.as_deref().and_then(|m| p.verdicts.iter().find(|v| v.model == m));
    let ceiling = verdict.and_then(|v| decode_ceiling(v, p.bandwidths));
    match claim.metric {
        ClaimMetric::RamGb | ClaimMetric::VramGb => {
            let (bytes, what) = match claim.metric {
                ClaimMetric::RamGb => (verdict.and_then(|v| v.ram_bytes), "RAM"),
                _ => (verdict.and_then(|v| v.vram_bytes), "VRAM"),
            };
            match (verdict, bytes) {
                (Some(v), _) if v.fit == Fit::NoGo => Differs(format!("predicted not to fit: {}", v.reason)),
                (_, Some(b)) => {
                    let gb = b as f64 / GIB;
                    let what = format!("the fit prediction estimates {} GB of {what}", num(gb));
                    if holds(e, gb) { Consistent(what) } else { Differs(what) }
                }
                _ => Unpredictable("no fit prediction for this model".into()),
            }
        }
        ClaimMetric::DecodeTps => match ceiling {
            Some(c) if e.min.is_some_and(|m| c < m) => {
                Contradicted(format!("memory bandwidth allows at most {} tok/s for the predicted split", num(c)))
            }
            Some(c) => Consistent(format!("the decode ceiling is {} tok/s", num(c))),
            None => Unpredictable("no decode ceiling (weights, split or bandwidth unknown)".into()),
        },
        ClaimMetric::Words | ClaimMetric::ResponseTimeS => words_and_time(plan, claim, all, ceiling),
        ClaimMetric::UsdPerMtok => match (plan.cost.as_ref(), ceiling) {
            (Some(cost), Some(c)) => {
                let j = cost.assumed_power_w.map(|w| w / c);
                match mtok_cost(cost, c, j).total {
                    Some(floor) if e.max.is_some_and(|m| floor > m * (1.0 + POINT_TOLERANCE)) => Contradicted(format!(
                        "even at the decode ceiling of {} tok/s it costs ${} per million tokens with the plan's `[cost]` inputs ({} W assumed)",
                        num(c),
                        num(floor),
                        num(cost.assumed_power_w.unwrap_or(0.0))
                    )),
                    Some(floor) => Consistent(format!(
                        "at the decode ceiling of {} tok/s it would cost ${} with the plan's `[cost]` inputs; the measured speed decides",
                        num(c),
                        num(floor)
                    )),
                    None => Unpredictable("the cost needs `cost.assumed_power_w` and a hardware lifetime".into()),
                }
            }
            (None, _) => Unpredictable("the plan has no `[cost]` section".into()),
            (_, None) => Unpredictable("no decode ceiling (weights, split or bandwidth unknown)".into()),
        },
        ClaimMetric::GpuUtilPct | ClaimMetric::GpuTempC => Unpredictable("measured during the runs".into()),
        ClaimMetric::AllocatableGb | ClaimMetric::DiskFreeGb => {
            Unpredictable("checked on the host by the Reader when the cycle starts".into())
        }
        ClaimMetric::ReferenceUsdPerMtok => Unpredictable("not measurable by this cycle".into()),
        ClaimMetric::BaselineImprovement => Unpredictable(match plan.baseline_model() {
            Some(b) => format!("measured on the answers: {} answers the same prompts", b.name),
            None => "no baseline model in the plan".into(),
        }),
    }
}

/// Why a claim cannot be measured by this plan at all, if it cannot.
pub fn not_measurable(plan: &Plan, claim: &PlanClaim) -> Option<String> {
    match claim.metric {
        ClaimMetric::ReferenceUsdPerMtok => {
            return Some(
                "a price quoted for another service: the box cannot measure it; the business case compares this box's cost with the plan's dated `[cost].cloud` prices".into(),
            );
        }
        ClaimMetric::BaselineImprovement if plan.baseline_model().is_none() => {
            return Some(
                "no baseline run: set `baseline = true` under `[concurrent]` so its models also answer the plan's prompts alone (the concurrent phase records latency and throughput, not answers), or give the models `params_b`".into(),
            );
        }
        _ => {}
    }
    let m = claim.model.as_deref()?;
    let main = plan.models.iter().any(|s| s.name == m);
    let concurrent = plan.concurrent.as_ref().is_some_and(|c| c.models.iter().any(|s| s.name == m));
    (!main && concurrent).then(|| {
        format!(
            "`{m}` runs only in the concurrent phase, which records latency and throughput under load, not this figure"
        )
    })
}

/// Words against the token cap and the decode ceiling, paired with the same model's
/// response-time claim (or a response-time claim with the words claim): every
/// whitespace-separated word takes at least one token, so W words need W tokens.
fn words_and_time(plan: &Plan, claim: &PlanClaim, all: &[PlanClaim], ceiling: Option<f64>) -> Foresight {
    use Foresight::*;
    let same = |metric: ClaimMetric| {
        all.iter()
            .filter(|c| c.metric == metric && c.model == claim.model)
            .filter(|c| c.prompt.is_none() || claim.prompt.is_none() || c.prompt == claim.prompt)
            .collect::<Vec<_>>()
    };
    let caps: Vec<u32> = plan
        .prompts
        .iter()
        .filter(|p| claim.prompt.as_ref().is_none_or(|id| &p.id == id))
        .map(|p| plan.max_tokens_for(p))
        .collect();
    let cap = caps.iter().max().copied();
    let (words_min, time_max) = match claim.metric {
        ClaimMetric::Words => {
            let min = claim.expected.min;
            if let (Some(w), Some(cap)) = (min, cap)
                && w > f64::from(cap)
            {
                return Contradicted(format!(
                    "answers are capped at {cap} tokens (`max_tokens`), and every word takes at least one token"
                ));
            }
            (min, same(ClaimMetric::ResponseTimeS).iter().filter_map(|c| c.expected.max).reduce(f64::max))
        }
        _ => (same(ClaimMetric::Words).iter().filter_map(|c| c.expected.min).reduce(f64::min), claim.expected.max),
    };
    match (words_min, time_max, ceiling) {
        (Some(w), Some(t), Some(c)) if w / c > t * (1.0 + POINT_TOLERANCE) => Contradicted(format!(
            "{} words need at least {} tokens; at the decode ceiling of {} tok/s that takes at least {} s, over the claimed {} s",
            num(w),
            num(w),
            num(c),
            num(w / c),
            num(t)
        )),
        (Some(w), Some(t), Some(c)) => Consistent(format!(
            "{} words at the decode ceiling of {} tok/s take at least {} s, within {} s",
            num(w),
            num(c),
            num(w / c),
            num(t)
        )),
        (_, _, None) => Unpredictable("no decode ceiling (weights, split or bandwidth unknown)".into()),
        _ => Unpredictable(match cap {
            Some(cap) => format!("the answers' length decides (capped at {cap} tokens)"),
            None => "the answers' length decides".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
name = "t"
[defaults]
max_tokens = 2048
[[models]]
name = "big"
engine = "ollama"
runtime = "process"
tag = "llama3.1:70b"
projected = { ram_gb = { min = 27.3, max = 27.3 }, response_time_s = { min = 180, max = 300 }, words = { min = 1000 } }
[[models]]
name = "small"
engine = "ollama"
runtime = "process"
tag = "llama3.1:8b"
[[prompts]]
id = "p"
text = "hi"
[concurrent]
levels = [1]
[[concurrent.models]]
name = "seven"
engine = "ollama"
runtime = "process"
tag = "deepseek-coder:6.7b"
[cost]
electricity_usd_per_kwh = 0.30
hardware_usd = 2200.0
lifetime_years = 3.0
hours_per_day = 8.0
assumed_power_w = 400.0
[[claims]]
text = "GPU utilization 80%+"
metric = "gpu_util_pct"
expected = { min = 80 }
[[claims]]
text = "$2–5 per million tokens"
metric = "usd_per_mtok"
expected = { min = 2, max = 5 }
[[claims]]
text = "200–500 word responses"
metric = "words"
model = "seven"
expected = { min = 200, max = 500 }
[[claims]]
text = "$30–60 (GPT-4)"
metric = "reference_usd_per_mtok"
expected = { min = 30, max = 60 }
"#;

    fn plan() -> Plan {
        Plan::from_toml(PLAN).expect("valid")
    }

    fn verdict(model: &str, weights_gib: f64, vram_gib: f64) -> FitVerdict {
        FitVerdict {
            model: model.into(),
            fit: Fit::GoPartialOffload,
            source: "test".into(),
            weights_bytes: Some((weights_gib * GIB) as u64),
            kv_bytes: None,
            compute_bytes: None,
            vram_bytes: Some((vram_gib * GIB) as u64),
            ram_bytes: Some((24.0 * GIB) as u64),
            gpu_layers: Some((28, 80)),
            reason: "partial".into(),
            suggestion: None,
        }
    }

    #[test]
    fn projected_figures_are_claims_and_unscoped_claims_are_per_model() {
        let claims = plan_claims(&plan());
        let sources: Vec<(&str, Option<&str>)> =
            claims.iter().map(|c| (c.source.as_str(), c.model.as_deref())).collect();
        assert_eq!(
            sources,
            [
                ("models[0].projected.ram_gb", Some("big")),
                ("models[0].projected.response_time_s", Some("big")),
                ("models[0].projected.words", Some("big")),
                ("claims[0]", Some("big")),
                ("claims[0]", Some("small")),
                ("claims[1]", Some("big")),
                ("claims[1]", Some("small")),
                ("claims[2]", Some("seven")),
                ("claims[3]", None),
            ]
        );
        assert_eq!(claims[0].text, "projected RAM 27.3 GB");
        assert_eq!(figure(ClaimMetric::UsdPerMtok, &Bounds { min: None, max: Some(5.0) }), "≤ $5 per million tokens");
        assert_eq!(
            figure(ClaimMetric::UsdPerMtok, &Bounds { min: Some(2.0), max: Some(5.0) }),
            "$2–5 per million tokens"
        );
        assert_eq!(figure(ClaimMetric::GpuUtilPct, &Bounds { min: Some(80.0), max: None }), "80+ %");
    }

    #[test]
    fn the_comparison_reads_a_single_figure_with_tolerance() {
        let point = Bounds { min: Some(27.3), max: Some(27.3) };
        assert!(holds(&point, 26.5) && holds(&point, 28.5) && !holds(&point, 25.0));
        let range = Bounds { min: Some(2.0), max: Some(5.0) };
        assert!(holds(&range, 2.0) && holds(&range, 5.0) && !holds(&range, 5.01) && !holds(&range, 1.99));
        assert!(holds(&Bounds { min: Some(80.0), max: None }, 80.0));
    }

    #[test]
    fn the_decode_ceiling_contradicts_a_thousand_words_in_five_minutes_on_partial_offload() {
        let p = plan();
        let claims = plan_claims(&p);
        // 40 GiB of weights, 14 on a 900 GB/s card and 26 in 60 GB/s RAM: about 2.2 tok/s.
        let verdicts = [verdict("big", 40.0, 14.0)];
        let pred = Predictions { verdicts: &verdicts, bandwidths: (Some(900.0), Some(60.0)) };
        let at = |source: &str| claims.iter().find(|c| c.source == source).expect("claim");
        let words = predict(&p, at("models[0].projected.words"), &claims, &pred);
        let time = predict(&p, at("models[0].projected.response_time_s"), &claims, &pred);
        for f in [&words, &time] {
            assert!(matches!(f, Foresight::Contradicted(t) if t.contains("decode ceiling")), "{f:?}");
        }
        // RAM: an estimate of 24 GiB against a claimed 27.3 GB ± 5 % differs; it is no bound.
        let ram = predict(&p, at("models[0].projected.ram_gb"), &claims, &pred);
        assert!(matches!(ram, Foresight::Differs(_)), "{ram:?}");
        // Cost: even at ~2 tok/s it is about $50 per million tokens, over the claimed $2–5.
        let cost = claims.iter().find(|c| c.source == "claims[1]" && c.model.as_deref() == Some("big")).expect("cost");
        assert!(matches!(predict(&p, cost, &claims, &pred), Foresight::Contradicted(_)));
        // Nothing is predicted where nothing can be.
        let util = &claims[3];
        assert!(matches!(predict(&p, util, &claims, &pred), Foresight::Unpredictable(_)));
        let no_bw = Predictions { verdicts: &verdicts, bandwidths: (None, None) };
        assert!(matches!(predict(&p, at("models[0].projected.words"), &claims, &no_bw), Foresight::Unpredictable(_)));
    }

    #[test]
    fn a_token_cap_below_the_claimed_words_contradicts_it() {
        let p = Plan::from_toml(&PLAN.replace("max_tokens = 2048", "max_tokens = 48")).expect("valid");
        let claims = plan_claims(&p);
        let words = claims.iter().find(|c| c.source == "models[0].projected.words").expect("claim");
        let f = predict(&p, words, &claims, &Predictions { verdicts: &[], bandwidths: (None, None) });
        assert!(matches!(&f, Foresight::Contradicted(t) if t.contains("48 tokens")), "{f:?}");
    }

    #[test]
    fn quoted_prices_and_concurrent_only_models_are_not_measurable() {
        let p = plan();
        let claims = plan_claims(&p);
        let seven = claims.iter().find(|c| c.source == "claims[2]").expect("claim");
        assert!(not_measurable(&p, seven).is_some_and(|w| w.contains("concurrent phase")));
        let gpt4 = claims.iter().find(|c| c.source == "claims[3]").expect("claim");
        assert!(not_measurable(&p, gpt4).is_some_and(|w| w.contains("cannot measure")));
        assert_eq!(not_measurable(&p, &claims[0]), None);
    }

    #[test]
    fn the_cost_formula_is_energy_plus_hardware() {
        let cost = plan().cost.expect("cost");
        let c = mtok_cost(&cost, 10.0, Some(40.0));
        // The mix: all output is the output-only cost; 3:1 at a prefill 30× the decode speed
        // takes (0.75/300 + 0.25/10) × 10⁶ s = 27,500 s instead of 100,000 s.
        let only = mix_cost(&cost, 10.0, 300.0, Some(400.0), 0.0).unwrap();
        assert!((only - c.total.unwrap()).abs() < 1e-9, "{only} {c:?}");
        let mixed = mix_cost(&cost, 10.0, 300.0, Some(400.0), 3.0).unwrap();
        assert!((mixed - only * 0.275).abs() < 1e-9, "{mixed} {only}");
        assert_eq!(mix_cost(&cost, 10.0, 0.0, Some(400.0), 3.0), None);
        assert_eq!(mix_cost(&cost, 10.0, 300.0, None, 3.0), None);
        // 40 J × 10⁶ = 11.1 kWh → $3.33; $2200 over 8760 h = $0.251/h over 36,000 tok/h → $6.98.
        assert!((c.electricity.unwrap_or(0.0) - 3.333).abs() < 0.01, "{c:?}");
        assert!((c.hardware.unwrap_or(0.0) - 6.976).abs() < 0.01, "{c:?}");
        assert!((c.total.unwrap_or(0.0) - 10.31).abs() < 0.01, "{c:?}");
    }
}
