//! `business-case.md`: what a million generated tokens cost on this box, against the plan's dated
//! cloud prices.

use super::ctx::Ctx;
use super::format::{DASH, num, plain, usd};
use super::paths::nav;
use super::view::{energy_of, outcome};
use crate::markdown::{Align, cell, fence, figures_table, inline, table};
use protocol::plan::CostInputs;
use std::fmt::Write as _;

pub(super) fn page(ctx: &Ctx) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Business case — {} (cycle {})\n", inline(&ctx.plan.name), ctx.cycle());
    s.push_str(&nav("business-case.md"));
    let Some(cost) = ctx.plan.cost.as_ref() else {
        s.push_str("The plan has no `[cost]` section, so no cost per token can be worked out. Add one like this (the figures are examples: put in your own electricity price, what the box cost, and dated cloud prices):\n\n");
        s.push_str(&fence(
            "[cost]\nelectricity_usd_per_kwh = 0.30   # your tariff\nhardware_usd = 2500              # what the box cost\nlifetime_years = 3               # over how long to write it off\nhours_per_day = 8                # hours a day it generates\nassumed_power_w = 350            # wall power while generating, if not measured\nrest_of_system_w = 50            # what NVML and RAPL do not measure (assumed)\ninput_output_ratio = 3           # prompt tokens per output token\n\n[[cost.cloud]]\nname = \"Provider model (output tokens)\"\nusd_per_mtok_min = 2.5\nusd_per_mtok_max = 10.0\ninput_usd_per_mtok = 1.0\nas_of = \"YYYY-MM-DD\"\nsource = \"the pricing page URL\"\n",
            "toml",
        ));
        return s;
    };
    s.push_str("What one million generated tokens cost on this box, from the measured decode speed, the power drawn while generating and the hardware written off over its lifetime, against the plan's dated cloud prices.\n\n");
    s.push_str("## Inputs\n\n");
    let rows = vec![
        vec![
            "Electricity".into(),
            format!("{} per kWh", usd(cost.electricity_usd_per_kwh)),
            "plan `cost.electricity_usd_per_kwh`".into(),
        ],
        vec!["Hardware price".into(), usd(cost.hardware_usd), "plan `cost.hardware_usd`".into()],
        vec!["Lifetime".into(), format!("{} years", plain(cost.lifetime_years)), "plan `cost.lifetime_years`".into()],
        vec!["Use".into(), format!("{} hours a day", plain(cost.hours_per_day)), "plan `cost.hours_per_day`".into()],
        vec![
            "Power while generating".into(),
            power_value(ctx, cost),
            "measured where the host exposed it: the GPU by NVML (energy counter or power), the CPU package by RAPL (`/sys/class/powercap`); the rest of the system assumed (plan `cost.rest_of_system_w`); with nothing measured, the whole box assumed (plan `cost.assumed_power_w`). Per model below".into(),
        ],
        vec![
            "Rest of the system".into(),
            cost.rest_of_system_w.map_or_else(|| DASH.into(), |w| format!("{} W assumed", num(w))),
            "plan `cost.rest_of_system_w`: memory, disks, fans, board and power-supply losses, which no counter measures".into(),
        ],
        vec![
            "Input:output mix".into(),
            cost.input_output_ratio.map_or_else(|| DASH.into(), |r| format!("{}:1", plain(r))),
            "plan `cost.input_output_ratio`: prompt tokens per output token, for the mixed cost".into(),
        ],
        vec!["Decode speed".into(), "per model, below".into(), "measured: client-side mean over all requests".into()],
    ];
    s.push_str(&table(&["Input", "Value", "Source"], &[], &rows));
    s.push_str("\n## Formulas\n\n");
    s.push_str("- tokens per hour = decode tok/s × 3600\n");
    s.push_str("- energy per token = GPU J per token (NVML: energy over the measured runs ÷ output tokens, else mean power ÷ decode tok/s) + CPU package J per token (RAPL energy over the runs ÷ output tokens) + rest-of-system W ÷ decode tok/s; with neither GPU nor CPU measured, assumed wall power ÷ decode tok/s\n");
    s.push_str("- energy per million tokens = energy per token in joules × 10⁶ ÷ 3,600,000 joules per kWh\n");
    s.push_str("- electricity per million tokens = that kWh × electricity price\n");
    s.push_str("- hardware per hour of use = hardware price ÷ (lifetime years × 365 × hours a day)\n");
    s.push_str("- hardware per million tokens = hardware per hour ÷ tokens per hour × 10⁶\n");
    s.push_str("- at an input:output mix of r:1, one million tokens hold r/(r+1) million prompt tokens processed at the measured prefill speed and 1/(r+1) million output tokens at the decode speed; each costs its time at the same whole-box power and hardware rate\n");
    s.push_str("\nThe figures assume the box generates at the measured single-stream speed for every hour of use. Idle power, cooling and the operator's time are not included. A part that was not measured is said so per model below: without RAPL the CPU package is not counted, so the total is a floor.\n");

    s.push_str("\n## Cost per million output tokens\n\n");
    let hours = cost.lifetime_years * 365.0 * cost.hours_per_day;
    let hw_per_hour = (hours > 0.0).then(|| cost.hardware_usd / hours);
    let mut totals: Vec<(String, Option<f64>)> = Vec::new();
    let mut mixes: Vec<Vec<String>> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for v in &ctx.views {
        let Some((tps, src)) = v.all.decode().filter(|(t, _)| *t > 0.0) else {
            rows.push(vec![
                v.name(),
                DASH.into(),
                DASH.into(),
                DASH.into(),
                DASH.into(),
                DASH.into(),
                DASH.into(),
                outcome(v),
            ]);
            continue;
        };
        let en = energy_of(v, tps, cost);
        let crate::claims::MtokCost { kwh, electricity: energy, hardware: hw, total } =
            crate::claims::mtok_cost(cost, tps, en.j_per_token);
        totals.push((v.name(), total));
        parts.push(format!("- {}: {}", v.name(), en.parts.join("; ")));
        if let Some(r) = cost.input_output_ratio {
            let prefill = v.all.prefill_tps.as_ref().map(|p| p.mean).filter(|p| *p > 0.0);
            let mix = prefill.and_then(|p| crate::claims::mix_cost(cost, tps, p, en.watts, r));
            mixes.push(vec![
                v.name(),
                prefill.map_or_else(|| DASH.into(), num),
                num(tps),
                total.map_or_else(|| DASH.into(), usd),
                mix.map_or_else(
                    || if prefill.is_none() { "— (no prefill speed measured)".into() } else { DASH.into() },
                    |m| format!("**{}**", usd(m)),
                ),
            ]);
        }
        rows.push(vec![
            v.name(),
            format!("{} ({src})", num(tps)),
            en.watts.map(|w| format!("{} ({})", num(w), en.power_source)).unwrap_or_else(|| DASH.into()),
            en.j_per_token.map(|j| format!("{} ({})", num(j), en.energy_source)).unwrap_or_else(|| DASH.into()),
            kwh.map(num).unwrap_or_else(|| DASH.into()),
            energy.map(usd).unwrap_or_else(|| DASH.into()),
            hw.map(usd).unwrap_or_else(|| DASH.into()),
            total.map(|t| format!("**{}**", usd(t))).unwrap_or_else(|| DASH.into()),
        ]);
    }
    s.push_str(&figures_table(
        1,
        &[
            "Model",
            "Decode tok/s",
            "Power W",
            "J per token",
            "kWh per Mtok",
            "Electricity per Mtok",
            "Hardware per Mtok",
            "Total per Mtok",
        ],
        &rows,
    ));
    if let Some(h) = hw_per_hour {
        let _ = writeln!(s, "\nHardware written off over {} hours of use: {} per hour.", plain(hours), usd(h));
    } else {
        s.push_str("\nThe hardware cannot be written off: lifetime or hours a day is zero.\n");
    }
    if !parts.is_empty() {
        s.push_str("\nWhat was measured and what assumed, per model:\n\n");
        for p in &parts {
            let _ = writeln!(s, "{p}");
        }
    }
    if let Some(r) = cost.input_output_ratio {
        let _ = writeln!(s, "\n## Cost per million tokens at a {}:1 input:output mix\n", plain(r));
        s.push_str("Comparable with cloud prices that charge prompt and output tokens apart: prompt tokens at the measured prefill speed (the engine's own timing), output tokens at the measured decode speed, both at the whole-box power above.\n\n");
        s.push_str(&figures_table(
            1,
            &["Model", "Prefill tok/s", "Decode tok/s", "Output-only per Mtok", "Mixed per Mtok"],
            &mixes,
        ));
    }
    claims_check(&mut s, ctx, &totals);

    s.push_str("\n## Against cloud APIs\n\n");
    cloud_table(&mut s, cost, &totals);
    s
}

/// The power row of the inputs: how many models had a measured part.
fn power_value(ctx: &Ctx, cost: &CostInputs) -> String {
    let measured = ctx
        .measured()
        .filter(|v| {
            v.tel().is_some_and(|t| {
                t.joules_per_token.is_some() || t.gpu_power_w.is_some() || t.cpu_joules_per_token.is_some()
            })
        })
        .count();
    let all = ctx.measured().count();
    let assumed = cost.assumed_power_w.map(|w| format!("{} W assumed", num(w)));
    match (measured, assumed) {
        (0, Some(a)) => format!("{a} (whole box)"),
        (0, None) => DASH.into(),
        (m, Some(a)) if m < all => format!("measured per model; {a} for the rest"),
        _ => "measured per model".into(),
    }
}

/// The plan's claims about this box's cost per million tokens, each checked against the measured
/// whole-box total: PASS when it falls in the claimed range, FAIL when not.
fn claims_check(s: &mut String, ctx: &Ctx, totals: &[(String, Option<f64>)]) {
    let claims: Vec<_> =
        ctx.plan.claims.iter().filter(|c| c.metric() == Some(protocol::plan::ClaimMetric::UsdPerMtok)).collect();
    if claims.is_empty() {
        return;
    }
    s.push_str("\n## The plan's cost claims against the measurement\n\n");
    for c in claims {
        let want = crate::claims::figure(protocol::plan::ClaimMetric::UsdPerMtok, &c.expected);
        for (name, total) in totals.iter().filter(|(n, _)| c.model.as_ref().is_none_or(|m| cell(m) == *n)) {
            let verdict = match total {
                Some(t) if crate::claims::holds(&c.expected, *t) => {
                    format!("**PASS**: {} per million output tokens", usd(*t))
                }
                Some(t) => format!("**FAIL**: {} per million output tokens", usd(*t)),
                None => "not measured: no power figure, measured or assumed".into(),
            };
            let _ = writeln!(s, "- \"{}\" ({want}), {name}: {verdict}", inline(&c.text));
        }
    }
}

pub(super) fn cloud_table(s: &mut String, cost: &CostInputs, totals: &[(String, Option<f64>)]) {
    if cost.cloud.is_empty() {
        s.push_str("The plan lists no cloud prices: add `[[cost.cloud]]` entries (name, USD per million tokens low and high, and the date of the quote).\n");
        return;
    }
    let ratio = cost.input_output_ratio;
    let mut headers: Vec<String> =
        vec!["Cloud offer".into(), "Output USD per Mtok".into(), "Input USD per Mtok".into()];
    if let Some(r) = ratio {
        headers.push(format!("At {}:1 mix", plain(r)));
    }
    headers.extend(["Quoted".to_string(), "Source".to_string()]);
    headers.extend(totals.iter().map(|(n, _)| format!("vs {n}")));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut cloud: Vec<_> = cost.cloud.iter().collect();
    cloud.sort_by(|a, b| a.usd_per_mtok_min.total_cmp(&b.usd_per_mtok_min).then_with(|| a.name.cmp(&b.name)));
    let span = |lo: f64, hi: f64| if lo == hi { usd(lo) } else { format!("{}–{}", usd(lo), usd(hi)) };
    let rows: Vec<Vec<String>> = cloud
        .iter()
        .map(|c| {
            let mut row = vec![
                cell(&c.name),
                span(c.usd_per_mtok_min, c.usd_per_mtok_max),
                c.input_usd_per_mtok.map_or_else(|| DASH.into(), usd),
            ];
            if let Some(r) = ratio {
                // Blended: r prompt tokens and one output token in every r + 1.
                row.push(c.input_usd_per_mtok.map_or_else(
                    || DASH.into(),
                    |i| span((r * i + c.usd_per_mtok_min) / (r + 1.0), (r * i + c.usd_per_mtok_max) / (r + 1.0)),
                ));
            }
            row.push(cell(&c.as_of));
            row.push(cell(&c.source));
            for (_, total) in totals {
                row.push(match total {
                    None => DASH.into(),
                    Some(t) => compare_price(*t, c.usd_per_mtok_min, c.usd_per_mtok_max),
                });
            }
            row
        })
        .collect();
    let mut align = vec![Align::Left, Align::Right, Align::Right];
    if ratio.is_some() {
        align.push(Align::Right);
    }
    align.extend([Align::Left, Align::Left]);
    s.push_str(&table(&header_refs, &align, &rows));
    s.push_str("\nEach \"vs\" cell compares that model's local total per million output tokens with the cloud's output price; the mixed column blends the cloud's input and output prices at the plan's mix, to set beside the local mixed cost above. Cloud prices are as quoted on the date shown, from the source named; check them before deciding.\n");
}

pub(super) fn compare_price(local: f64, lo: f64, hi: f64) -> String {
    if local <= 0.0 {
        return DASH.into();
    }
    let span = |a: f64, b: f64| {
        if num(a) == num(b) { format!("{}×", num(a)) } else { format!("{}–{}×", num(a), num(b)) }
    };
    if local < lo {
        format!("local {} cheaper", span(lo / local, hi / local))
    } else if local > hi && hi > 0.0 {
        format!("cloud {} cheaper", span(local / hi, if lo > 0.0 { local / lo } else { local / hi }))
    } else {
        "within the cloud range".into()
    }
}
