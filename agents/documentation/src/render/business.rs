//! `business-case.md`: what a million generated tokens cost on this box, against the plan's dated
//! cloud prices.

use super::ctx::Ctx;
use super::format::{DASH, num, plain, usd};
use super::paths::nav;
use super::view::energy_of;
use super::view::outcome;
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
            "[cost]\nelectricity_usd_per_kwh = 0.30   # your tariff\nhardware_usd = 2500              # what the box cost\nlifetime_years = 3               # over how long to write it off\nhours_per_day = 8                # hours a day it generates\nassumed_power_w = 350            # wall power while generating, if not measured\n\n[[cost.cloud]]\nname = \"Provider model (output tokens)\"\nusd_per_mtok_min = 2.5\nusd_per_mtok_max = 10.0\nas_of = \"YYYY-MM-DD\"\n",
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
        {
            let measured = ctx
                .measured()
                .filter(|v| v.tel().is_some_and(|t| t.joules_per_token.is_some() || t.gpu_power_w.is_some()))
                .count();
            let all = ctx.measured().count();
            let assumed = cost.assumed_power_w.map(|w| format!("{} W assumed", num(w)));
            vec![
                "Power while generating".into(),
                match (measured, assumed) {
                    (0, Some(a)) => a,
                    (0, None) => DASH.into(),
                    (m, Some(a)) if m < all => format!("measured per model; {a} for the rest"),
                    _ => "measured per model".into(),
                },
                match (measured, cost.assumed_power_w.is_some()) {
                    (0, true) => "plan `cost.assumed_power_w`: assumed, because the results carry no power measured during the runs".into(),
                    (0, false) => "not measured and not assumed: add `cost.assumed_power_w`".into(),
                    (m, true) if m < all => "measured: the GPU's energy per token (NVML) where it was sampled; plan `cost.assumed_power_w` where it was not".into(),
                    (m, false) if m < all => "measured: the GPU's energy per token (NVML) where it was sampled; add `cost.assumed_power_w` for the others".into(),
                    _ => "measured: the GPU's energy per token (NVML) during the runs".into(),
                },
            ]
        },
        vec!["Decode speed".into(), "per model, below".into(), "measured: client-side mean over all requests".into()],
    ];
    s.push_str(&table(&["Input", "Value", "Source"], &[], &rows));
    s.push_str("\n## Formulas\n\n");
    s.push_str("- tokens per hour = decode tok/s × 3600\n");
    s.push_str("- energy per token = the measured joules per generated token (GPU energy over the measured runs ÷ output tokens) where the GPU was sampled; else power W ÷ decode tok/s, with the mean measured GPU power or the assumed power\n");
    s.push_str("- energy per million tokens = energy per token in joules × 10⁶ ÷ 3,600,000 joules per kWh\n");
    s.push_str("- electricity per million tokens = that kWh × electricity price\n");
    s.push_str("- hardware per hour of use = hardware price ÷ (lifetime years × 365 × hours a day)\n");
    s.push_str("- hardware per million tokens = hardware per hour ÷ tokens per hour × 10⁶\n");
    s.push_str("\nThe figures assume the box generates at the measured single-stream speed for every hour of use, and count output tokens only: prompt tokens are processed far faster (prefill) and are left out. Idle power, cooling and the operator's time are not included. Measured power is the GPU's own draw as NVML reports it: the CPU, memory and power supply losses are not in it, so it is a floor for the wall power; an assumed figure is meant as wall power.\n");

    s.push_str("\n## Cost per million output tokens\n\n");
    let hours = cost.lifetime_years * 365.0 * cost.hours_per_day;
    let hw_per_hour = (hours > 0.0).then(|| cost.hardware_usd / hours);
    let mut totals: Vec<(String, Option<f64>)> = Vec::new();
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
        let en = energy_of(v, tps, cost.assumed_power_w);
        let crate::claims::MtokCost { kwh, electricity: energy, hardware: hw, total } =
            crate::claims::mtok_cost(cost, tps, en.j_per_token);
        totals.push((v.name(), total));
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

    s.push_str("\n## Against cloud APIs\n\n");
    cloud_table(&mut s, cost, &totals);
    s
}

pub(super) fn cloud_table(s: &mut String, cost: &CostInputs, totals: &[(String, Option<f64>)]) {
    if cost.cloud.is_empty() {
        s.push_str("The plan lists no cloud prices: add `[[cost.cloud]]` entries (name, USD per million tokens low and high, and the date of the quote).\n");
        return;
    }
    let mut headers: Vec<String> = vec!["Cloud offer".into(), "USD per Mtok".into(), "Quoted".into()];
    headers.extend(totals.iter().map(|(n, _)| format!("vs {n}")));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut cloud: Vec<_> = cost.cloud.iter().collect();
    cloud.sort_by(|a, b| a.usd_per_mtok_min.total_cmp(&b.usd_per_mtok_min).then_with(|| a.name.cmp(&b.name)));
    let rows: Vec<Vec<String>> = cloud
        .iter()
        .map(|c| {
            let range = if c.usd_per_mtok_min == c.usd_per_mtok_max {
                usd(c.usd_per_mtok_min)
            } else {
                format!("{}–{}", usd(c.usd_per_mtok_min), usd(c.usd_per_mtok_max))
            };
            let mut row = vec![cell(&c.name), range, cell(&c.as_of)];
            for (_, total) in totals {
                row.push(match total {
                    None => DASH.into(),
                    Some(t) => compare_price(*t, c.usd_per_mtok_min, c.usd_per_mtok_max),
                });
            }
            row
        })
        .collect();
    s.push_str(&table(&header_refs, &[Align::Left, Align::Right, Align::Left], &rows));
    s.push_str("\nEach \"vs\" cell compares that model's local total per million output tokens with the cloud price. Cloud prices are as quoted on the date shown; check them before deciding.\n");
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
