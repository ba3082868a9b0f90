//! Host verification: one host's measured facts and checks as tables, and for a several-host
//! cycle every host's facts and checks and where each model was placed and why.

use super::ctx::Ctx;
use super::format::{DASH, check_word, fit_word, gib, num, plain};
use crate::markdown::{cell, inline, table};
use protocol::messages::BenchmarkResults;
use protocol::results::{Check, Fit, HostFacts};
use std::fmt::Write as _;

/// The checks of one host as a table.
pub(super) fn checks_table(checks: &[Check]) -> String {
    let mut s = String::new();
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                cell(&c.name),
                check_word(c.status).into(),
                cell(&c.measured),
                c.threshold.as_deref().map(cell).unwrap_or_else(|| DASH.into()),
                cell(&c.detail),
            ]
        })
        .collect();
    if rows.is_empty() {
        s.push_str("No host checks were recorded.\n");
    } else {
        s.push_str(&table(&["Check", "Status", "Measured", "Threshold", "Detail"], &[], &rows));
    }
    s
}

pub(super) fn host_facts(ctx: &Ctx) -> String {
    host_facts_table(&ctx.input.results.verification.host)
}

/// One host's measured facts as a table.
pub(super) fn host_facts_table(h: &HostFacts) -> String {
    let mut rows = vec![
        vec!["Host".into(), format!("{} (id {})", cell(&h.hostname), cell(&h.host_id))],
        vec!["Kernel".into(), cell(&h.kernel)],
        vec!["CPU".into(), format!("{}, {} logical CPUs", cell(&h.cpu_model), h.cpus)],
        vec![
            "RAM".into(),
            format!("{} GiB total, {} GiB available", plain(gib(h.ram_total)), num(gib(h.ram_available))),
        ],
        vec!["Swap".into(), format!("{} GiB total, {} GiB free", plain(gib(h.swap_total)), plain(gib(h.swap_free)))],
        vec![
            "Memory limit of the agent's cgroup".into(),
            h.cgroup_memory_limit.map(|b| format!("{} GiB", num(gib(b)))).unwrap_or_else(|| "none".into()),
        ],
        vec!["Model store".into(), format!("{} ({} GiB free)", cell(&h.model_store), num(gib(h.disk_free)))],
    ];
    for g in &h.gpus {
        rows.push(vec![
            format!("GPU {}", g.index),
            format!(
                "{}: {} GiB VRAM, {} GiB in use, {}, {}, driver {}",
                cell(&g.name),
                plain(gib(g.vram_total)),
                num(gib(g.vram_used)),
                g.temperature_c.map(|t| format!("{t} °C")).unwrap_or_else(|| "temperature unknown".into()),
                g.power_w.map(|p| format!("{} W", num(p))).unwrap_or_else(|| "power unknown".into()),
                cell(&g.driver)
            ),
        ]);
    }
    if let Some(n) = &h.gpu_note {
        rows.push(vec!["GPU note".into(), cell(n)]);
    }
    rows.push(vec![
        "Docker".into(),
        match &h.docker_version {
            Some(v) => format!(
                "{}, runtimes: {}",
                cell(v),
                if h.docker_runtimes.is_empty() { DASH.to_string() } else { cell(&h.docker_runtimes.join(", ")) }
            ),
            None => h.docker_note.as_deref().map(cell).unwrap_or_else(|| "not reachable".into()),
        },
    ]);
    table(&["Item", "Value"], &[], &rows)
}

/// Every host's facts and checks, one subsection per host.
pub(super) fn hosts_section(results: &BenchmarkResults) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "This cycle ran on {} hosts; each Reader measured its own.", results.hosts.len());
    for h in &results.hosts {
        let _ = writeln!(s, "\n### Host {}\n", inline(&h.host.host_id));
        s.push_str(&host_facts_table(&h.host));
        s.push('\n');
        s.push_str(&checks_table(&h.checks));
    }
    s
}

/// Where Main placed each model and why, with every host's verdict, and the concurrent phase.
pub(super) fn placement_section(results: &BenchmarkResults) -> String {
    let Some(p) = &results.verification.placement else { return String::new() };
    let mut s = String::from("\n## Placement\n\n");
    s.push_str("Main placed each model on a host where the Reader predicted it fits fully (go), balancing the number of models among those; a model that fits fully nowhere went to the host with the best partial offload; one that fits nowhere was not run.\n\n");
    let mut headers = vec!["Model", "Host", "Why"];
    headers.extend(p.hosts.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = p
        .models
        .iter()
        .map(|m| {
            let mut row = vec![
                cell(&m.model),
                if m.fit == Fit::NoGo { format!("none ({} reports it)", inline(&m.host)) } else { inline(&m.host) },
                cell(&m.reason),
            ];
            for h in &p.hosts {
                row.push(
                    m.verdicts.iter().find(|v| &v.host == h).map(|v| fit_word(v.fit).to_string()).unwrap_or_default(),
                );
            }
            row
        })
        .collect();
    // The host names are headers: show them as the operator typed them, escaped for a cell.
    let escaped: Vec<String> = headers.iter().map(|h| cell(h)).collect();
    let refs: Vec<&str> = escaped.iter().map(String::as_str).collect();
    s.push_str(&table(&refs, &[], &rows));
    if results.verification.plan.concurrent.is_some() {
        let _ = writeln!(
            s,
            "\nConcurrent phase: {} — {}",
            p.concurrent.as_deref().map(|h| format!("on host {}", inline(h))).unwrap_or_else(|| "not run".into()),
            cell(&p.concurrent_reason)
        );
    }
    s
}
