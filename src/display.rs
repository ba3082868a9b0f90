//! Text and JSON output for operator commands, `plan check` and `compare`.

use crate::exit;
use agent_documentation::claims::{self, Foresight, PlanClaim};
use anyhow::Result;
use protocol::operator::OperatorReply;
use protocol::results::{EscalationRecord, Fit, FitVerdict};
use std::path::Path;

/// Text from outside (an engine's error, a container's log, a model's answer, a reason another
/// agent wrote) made safe for a terminal: the one cleaner, [`protocol::text::terminal_safe`].
pub use protocol::text::terminal_safe as clean;

fn gib(b: u64) -> String {
    format!("{:.1} GB", b as f64 / (1u64 << 30) as f64)
}

/// Prints Main's answer: text, or with `json` one compact JSON object on one line (so
/// `status --watch --json` is a stream of objects, one per line, for `jq`).
pub fn print_reply(reply: &OperatorReply, json: bool) {
    let now = chrono::Utc::now();
    if json {
        let v = match reply {
            OperatorReply::Status { cycles, agents, .. } => crate::status::status_json(cycles, agents, now),
            other => serde_json::to_value(other).unwrap_or_default(),
        };
        println!("{v}");
        return;
    }
    match reply {
        OperatorReply::Started { cycle } => println!("cycle {cycle} started"),
        OperatorReply::Status { cycles, agents, .. } => {
            print!("{}", crate::status::cycles_table(cycles, now));
            for c in cycles {
                for h in &c.hosts {
                    let placed: Vec<&str> =
                        c.placement.iter().filter(|(_, ph)| *ph == h).map(|(m, _)| m.as_str()).collect();
                    if placed.is_empty() {
                        println!("{} host {}: waiting for placement", c.id, clean(h));
                    } else {
                        let done = c.host_done.get(h).copied().unwrap_or(0);
                        println!(
                            "{} host {}: models {done}/{} ({})",
                            c.id,
                            clean(h),
                            placed.len(),
                            clean(&placed.join(", "))
                        );
                    }
                }
            }
            if !agents.is_empty() {
                println!();
                print!("{}", crate::status::agents_table(agents));
            }
        }
        OperatorReply::Canceled { state } => println!("cycle is now {state:?}"),
        OperatorReply::TuningStopped { cycle, tuning } if tuning.is_empty() => {
            println!("tuning stopped in cycle {}: no search is under way; later models will not be tuned", clean(cycle))
        }
        OperatorReply::TuningStopped { cycle, tuning } => println!(
            "tuning stopped in cycle {}: {} conclude(s) after the trial under way with the best found so far; later models will not be tuned",
            clean(cycle),
            clean(&tuning.join(", "))
        ),
        OperatorReply::Resumed { cycle, resumes: 0 } => {
            println!("cycle {cycle} goes on (it was interrupted; what was in flight is redelivered)")
        }
        OperatorReply::Resumed { cycle, resumes } => println!("cycle {cycle} resumed (resume {resumes})"),
        OperatorReply::Reports { dir, files } => match dir {
            Some(d) => {
                println!("{}", clean(d));
                for f in files.iter().filter(|f| !f.starts_with("data/answers/")) {
                    println!("  {}", clean(f));
                }
            }
            None => println!("no reports yet"),
        },
        OperatorReply::Escalations { items } => {
            if items.is_empty() {
                println!("no escalations waiting");
            }
            for e in items {
                print_escalation(e);
            }
        }
        OperatorReply::Resolved { id } => println!("escalation {id}: decision sent"),
        OperatorReply::Error { code, message } => eprintln!("error ({code}): {}", clean(message)),
    }
}

/// Prints one escalation with its numbered options.
pub fn print_escalation(e: &EscalationRecord) {
    let state = match &e.decision {
        Some(d) => format!("decided by {} at {}", clean(&d.by), d.at),
        None => "WAITING FOR YOU".into(),
    };
    println!("escalation {}  cycle {}  model {}  attempt {}  [{}]", e.id, e.cycle, clean(&e.model), e.attempt, state);
    println!("  failure:   {}", clean(&e.failure.chars().take(300).collect::<String>()));
    println!("  diagnosis: {} (confidence {:.0}%)", clean(&e.diagnosis), e.confidence * 100.0);
    for o in &e.options {
        println!(
            "  {}) {}{} — {}",
            o.number,
            clean(&o.summary),
            if o.safe { "" } else { " (needs your say-so)" },
            clean(&o.rationale)
        );
    }
    if e.decision.is_none() {
        println!("  answer: threadcycle resolve {} <number>   (or --set key=value, --skip, --abort)", e.id);
    }
}

fn verdict_row(v: &FitVerdict) -> String {
    let fit = match v.fit {
        Fit::Go => "GO",
        Fit::GoPartialOffload => "GO (partial offload)",
        Fit::NoGo => "NO-GO",
        Fit::Unknown => "UNKNOWN",
    };
    let layers = v.gpu_layers.map(|(a, b)| format!("{a}/{b}")).unwrap_or_else(|| "—".into());
    format!(
        "{:<22} {:<21} VRAM {:>9}  RAM {:>9}  layers on GPU {:>6}  — {}{}",
        v.model,
        fit,
        v.vram_bytes.map(gib).unwrap_or_else(|| "—".into()),
        v.ram_bytes.map(gib).unwrap_or_else(|| "—".into()),
        layers,
        v.reason,
        v.suggestion.as_ref().map(|s| format!(" → {s}")).unwrap_or_default()
    )
}

/// `threadcycle plan check`: validate and predict, running nothing.
pub async fn plan_check(path: &Path, profile: Option<&Path>, json: bool) -> Result<u8> {
    let (_, plan) = match crate::plan_file::read_plan(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::BAD_INPUT);
        }
    };
    // Bandwidths for the decode roofline: (GPU, RAM), decimal GB/s.
    let bandwidths: (Option<f64>, Option<f64>);
    let (verdicts, host_label) = match profile {
        Some(p) => match agent_reader::profile::load(p) {
            Ok(prof) => {
                bandwidths = (Some(prof.gpu_bandwidth_gbs), Some(prof.ram_bandwidth_gbs));
                (agent_reader::agent::plan_verdicts(&plan, &prof.capacity()).0, format!("host profile {}", p.display()))
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(exit::BAD_INPUT);
            }
        },
        None => {
            let (facts, checks) = agent_reader::agent::host_facts(&plan, "local", false).await;
            if !json {
                println!("host checks on this machine:");
                for c in &checks {
                    println!(
                        "  {:<26} {:<11} {}{}",
                        c.name,
                        format!("{:?}", c.status).to_uppercase(),
                        c.measured,
                        c.threshold.as_ref().map(|t| format!(" (needs {t})")).unwrap_or_default()
                    );
                }
            }
            let label = format!(
                "this machine ({}, {} RAM available, {})",
                facts.hostname,
                gib(facts.ram_available),
                facts.gpu_note.clone().unwrap_or_else(|| facts
                    .gpus
                    .iter()
                    .map(|g| g.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "))
            );
            bandwidths = facts.bandwidths();
            (agent_reader::agent::verdicts(&plan, &facts).0, label)
        }
    };
    let roofline: Vec<Option<f64>> =
        verdicts.iter().map(|v| agent_documentation::claims::decode_ceiling(v, bandwidths)).collect();
    let ledger = predicted_ledger(&plan, &verdicts, bandwidths);
    if json {
        let claims: Vec<serde_json::Value> = ledger
            .iter()
            .map(|(c, f)| {
                let (kind, text) = match f {
                    Foresight::Contradicted(t) => ("contradicted", t),
                    Foresight::Consistent(t) => ("consistent", t),
                    Foresight::Differs(t) => ("estimate_differs", t),
                    Foresight::Unpredictable(t) => ("unpredictable", t),
                };
                serde_json::json!({ "claim": c.text, "source": c.source, "model": c.model, "prompt": c.prompt,
                    "metric": c.metric.name(), "expected": c.expected, "prediction": kind, "why": text,
                    "measurable": claims::not_measurable(&plan, c).is_none() })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string(
                &serde_json::json!({ "plan": plan, "host": host_label, "verdicts": verdicts, "roofline_decode_tps": roofline, "claims": claims })
            )?
        );
    } else {
        println!(
            "plan `{}` ({}): {} model(s), {} prompt(s) × {} repetition(s){}",
            plan.name,
            path.display(),
            plan.models.len(),
            plan.prompts.len(),
            plan.defaults.repetitions,
            baselines_note(&plan)
        );
        println!(
            "effective defaults: context {}, max_tokens {}, temperature {}, seed {}, load timeout {} s, request timeout {} s (longer where a model's predicted decode needs it), stall timeout {} s, policy {:?} (max {} attempts)",
            plan.defaults.context,
            plan.defaults.max_tokens,
            plan.defaults.temperature,
            plan.defaults.seed,
            plan.defaults.load_timeout_s,
            plan.defaults.request_timeout_s,
            plan.defaults.stall_timeout_s,
            plan.policy.default,
            plan.policy.max_attempts
        );
        if plan.defaults.pull_ahead {
            println!(
                "pull-ahead: on (the next Ollama model is pulled while one is measured: faster, but not clean measurements)"
            );
        }
        println!("fit on {host_label}:");
        for (v, roof) in verdicts.iter().zip(&roofline) {
            match roof {
                Some(t) => println!("  {}; decode at most {t:.1} tok/s (memory-bandwidth roofline)", verdict_row(v)),
                None => println!("  {}", verdict_row(v)),
            }
        }
        print_ledger(&plan, &ledger);
    }
    Ok(if verdicts.iter().any(|v| v.fit == Fit::NoGo) { exit::FAILED } else { 0 })
}

/// Every claim of the plan with what the fit and decode-ceiling predictions say about it.
fn predicted_ledger(
    plan: &protocol::plan::Plan,
    verdicts: &[FitVerdict],
    bandwidths: (Option<f64>, Option<f64>),
) -> Vec<(PlanClaim, Foresight)> {
    let all = claims::plan_claims(plan);
    let pred = claims::Predictions { verdicts, bandwidths };
    all.iter().map(|c| (c.clone(), claims::predict(plan, c, &all, &pred))).collect()
}

/// The predictable part of the claims ledger: contradicted claims first, then the rest.
fn print_ledger(plan: &protocol::plan::Plan, ledger: &[(PlanClaim, Foresight)]) {
    if ledger.is_empty() {
        println!("claims ledger: the plan makes no claims");
        return;
    }
    let contradicted = ledger.iter().filter(|(_, f)| matches!(f, Foresight::Contradicted(_))).count();
    println!(
        "claims ledger, before anything runs: {} claim(s), {contradicted} already contradicted by the predictions",
        ledger.len()
    );
    let order = |f: &Foresight| match f {
        Foresight::Contradicted(_) => 0,
        Foresight::Differs(_) => 1,
        Foresight::Consistent(_) => 2,
        Foresight::Unpredictable(_) => 3,
    };
    let mut rows: Vec<&(PlanClaim, Foresight)> = ledger.iter().collect();
    rows.sort_by_key(|(_, f)| order(f));
    for (c, f) in rows {
        let word = match f {
            _ if claims::not_measurable(plan, c).is_some() => "unmeasurable",
            Foresight::Contradicted(_) => "CONTRADICTED",
            Foresight::Consistent(_) => "consistent",
            Foresight::Differs(_) => "differs",
            Foresight::Unpredictable(_) => "at run time",
        };
        let about = match (&c.model, &c.prompt) {
            (Some(m), Some(p)) => format!(" [{m}, prompt {p}]"),
            (Some(m), None) => format!(" [{m}]"),
            (None, Some(p)) => format!(" [prompt {p}]"),
            (None, None) => String::new(),
        };
        println!(
            "  {word:<12} \"{}\"{} ({}: {}) — {}",
            clean(&c.text),
            clean(&about),
            c.source,
            claims::figure(c.metric, &c.expected),
            clean(f.text())
        );
    }
}

/// `threadcycle compare`: markdown comparison of two cycles' results.
pub fn compare(out: &Path, a: &str, b: &str, threshold: f64, json: bool) -> Result<u8> {
    let load = |c: &str| -> Result<protocol::messages::BenchmarkResults, String> {
        let p = out.join(c).join("data/results.json");
        let text = std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not a results file: {e}", p.display()))
    };
    match (load(a), load(b)) {
        (Ok(ra), Ok(rb)) if json => {
            let figures = agent_documentation::compare::changes(&ra, &rb, threshold);
            println!("{}", serde_json::json!({ "a": a, "b": b, "threshold_pct": threshold, "figures": figures }));
            Ok(0)
        }
        (Ok(ra), Ok(rb)) => {
            print!("{}", agent_documentation::compare::compare(a, &ra, b, &rb, threshold));
            Ok(0)
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            Ok(exit::BAD_INPUT)
        }
    }
}

/// `; baselines …` when the plan's concurrent models also answer the prompts alone.
fn baselines_note(plan: &protocol::plan::Plan) -> String {
    let b: Vec<String> =
        plan.models.iter().filter(|m| m.baseline).map(|m| format!("{} ×{}", m.name, plan.repetitions_for(m))).collect();
    if b.is_empty() { String::new() } else { format!("; baselines answering alone: {}", b.join(", ")) }
}

#[cfg(test)]
mod clean_tests {
    use super::clean;

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        assert_eq!(
            clean("boom \u{1b}[2J\u{1b}]0;t\u{7}\0\r\u{7f}\u{9b}x\n\tok é"),
            "boom ␛[2J␛]0;t␇␀␍␡<U+009B>x\n\tok é"
        );
    }
}
