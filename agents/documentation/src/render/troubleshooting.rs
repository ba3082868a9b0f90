//! `troubleshooting.md`: every escalation with its evidence, diagnosis, options, decision and
//! outcome.

use super::ctx::Ctx;
use super::format::{DASH, action_text, class_words, gib, num, percent};
use super::paths::nav;
use super::view::outcome;
use crate::markdown::{Align, cell, fence, inline, table};
use protocol::results::EscalationRecord;
use std::collections::BTreeSet;
use std::fmt::Write as _;

pub(super) fn page(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Troubleshooting log — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav("troubleshooting.md"));
    let recorded: BTreeSet<&str> = ctx.escalations.iter().map(|e| e.id.as_str()).collect();
    let missing: Vec<&String> =
        ctx.input.results.escalations.iter().filter(|id| !recorded.contains(id.as_str())).collect();
    if ctx.escalations.is_empty() {
        s.push_str("No escalations: every model that ran did so without a failure Debug had to handle.\n");
    } else {
        let _ = writeln!(s, "{} escalation(s) in this cycle, oldest first.\n", ctx.escalations.len());
        let rows: Vec<Vec<String>> = ctx
            .escalations
            .iter()
            .enumerate()
            .map(|(i, e)| {
                vec![
                    (i + 1).to_string(),
                    cell(&e.model),
                    e.attempt.to_string(),
                    class_words(e.class).into(),
                    e.decision.as_ref().map(|d| action_text(&d.action)).unwrap_or_else(|| "none recorded".into()),
                    escalation_outcome(ctx, e).0,
                ]
            })
            .collect();
        s.push_str(&table(
            &["#", "Model", "Attempt", "Failure", "Decision", "Outcome"],
            &[Align::Right, Align::Left, Align::Right],
            &rows,
        ));
    }
    for (i, e) in ctx.escalations.iter().enumerate() {
        escalation_section(&mut s, ctx, i + 1, e);
    }
    if !missing.is_empty() {
        let _ = writeln!(
            s,
            "\nThe Writer raised escalation(s) {} but Debug's record of them did not reach Documentation.",
            missing.iter().map(|m| inline(m)).collect::<Vec<_>>().join(", ")
        );
    }
    s
}

/// One escalation in full: failure, evidence, diagnosis, options, decision and outcome.
fn escalation_section(s: &mut String, ctx: &Ctx, number: usize, e: &EscalationRecord) {
    let _ = writeln!(s, "\n## {}. {}, attempt {}: {}\n", number, inline(&e.model), e.attempt, class_words(e.class));
    let _ = writeln!(s, "Opened {} · escalation {}\n", inline(&e.opened_at), inline(&e.id));
    if let Some(h) = ctx.views.iter().find(|v| v.r.model == e.model).and_then(|v| v.host) {
        let _ = writeln!(s, "Host {}\n", inline(h));
    }
    s.push_str("### Failure\n\n");
    let _ = writeln!(s, "{}", inline(&e.failure));
    s.push_str("\n### Evidence\n\n");
    let ev = &e.evidence;
    let mut rows: Vec<Vec<String>> = vec![
        vec!["Exit status".into(), ev.exit_status.as_deref().map(cell).unwrap_or_else(|| DASH.into())],
        vec![
            "OOM killed".into(),
            match ev.oom_killed {
                Some(true) => "**yes**".into(),
                Some(false) => "no".into(),
                None => DASH.into(),
            },
        ],
        vec!["Engine error".into(), ev.engine_error.as_deref().map(cell).unwrap_or_else(|| DASH.into())],
        vec![
            "Host RAM available".into(),
            ev.host_ram_available.map(|b| format!("{} GiB", num(gib(b)))).unwrap_or_else(|| DASH.into()),
        ],
        vec![
            "GPU memory free".into(),
            ev.gpu_free.map(|b| format!("{} GiB", num(gib(b)))).unwrap_or_else(|| DASH.into()),
        ],
        vec!["GPU temperature".into(), ev.gpu_temp_c.map(|t| format!("{t} °C")).unwrap_or_else(|| DASH.into())],
    ];
    rows.push(vec!["Earlier attempts".into(), ev.attempts.to_string()]);
    s.push_str(&table(&["Evidence", "Value"], &[], &rows));
    if ev.log_tail.is_empty() {
        s.push_str("\nNo engine log lines were captured.\n");
    } else {
        let _ = writeln!(s, "\nLast {} line(s) of the engine log:\n", ev.log_tail.len());
        s.push_str(&fence(&ev.log_tail.join("\n"), "text"));
    }
    s.push_str("\n### Diagnosis\n\n");
    let _ = writeln!(
        s,
        "Class `{}` ({}), confidence {}.\n\n{}\n",
        e.class.as_str(),
        class_words(e.class),
        percent(e.confidence.clamp(0.0, 1.0)),
        inline(&e.diagnosis)
    );
    s.push_str("### Options\n\n");
    if e.options.is_empty() {
        s.push_str("Debug proposed no option.\n");
    } else {
        let rows: Vec<Vec<String>> = e
            .options
            .iter()
            .map(|o| {
                vec![
                    o.number.to_string(),
                    cell(&o.summary),
                    cell(&o.rationale),
                    if o.safe { "yes".into() } else { "no".into() },
                    action_text(&o.action),
                ]
            })
            .collect();
        s.push_str(&table(&["#", "Option", "Why it should help", "Safe for auto", "Change"], &[Align::Right], &rows));
    }
    s.push_str("\n### Decision\n\n");
    match &e.decision {
        Some(d) => {
            let chosen = match d.option {
                Some(n) => format!("Option {n}"),
                None => "A custom change".to_string(),
            };
            let _ = writeln!(
                s,
                "{chosen} — {} — decided by {} at {}.",
                action_text(&d.action),
                inline(&d.by),
                inline(&d.at)
            );
        }
        None => s.push_str("No decision was recorded.\n"),
    }
    s.push_str("\n### Outcome\n\n");
    let _ = writeln!(s, "{}", escalation_outcome(ctx, e).1);
}

/// Short and long outcome of an escalation, from the model's attempts and final status.
pub(super) fn escalation_outcome(ctx: &Ctx, e: &EscalationRecord) -> (String, String) {
    let Some(v) = ctx.views.iter().find(|v| v.r.model == e.model) else {
        return ("unknown".into(), "The results hold nothing for this model.".into());
    };
    let next = v.r.attempts.iter().find(|a| a.number == e.attempt + 1);
    let status = outcome(v);
    match next {
        Some(a) => {
            let ok = a.outcome.trim().eq_ignore_ascii_case("ok");
            let changes = if a.changes.is_empty() {
                "no change".to_string()
            } else {
                a.changes.iter().map(|c| cell(&c.to_string())).collect::<Vec<_>>().join(", ")
            };
            let short = if ok { format!("attempt {} ok", a.number) } else { format!("attempt {} failed", a.number) };
            let long = format!(
                "Attempt {} ran with {changes}: {}. Final state: {status}.",
                a.number,
                if ok { "it succeeded".to_string() } else { cell(&a.outcome) }
            );
            (short, long)
        }
        None => (status.clone(), format!("There was no further attempt. Final state: {status}.")),
    }
}
