//! Placing a several-host cycle's models: each model on a host where the Reader predicts it fits
//! fully, balanced among those; one that fits fully nowhere on the host with the best partial
//! offload; one that fits nowhere is reported not run, with every host's reason. The concurrent
//! phase goes to one host where its models fit together.
//!
//! A pure function of the hosts' verification reports, so a redelivered report places the same
//! way.

use protocol::messages::{HostVerdict, ModelPlacement, Placement, VerificationReport};
use protocol::plan::Plan;
use protocol::results::{Fit, FitVerdict};

/// How good a verdict is for placing: higher is better.
fn rank(f: Fit) -> u8 {
    match f {
        Fit::Go => 3,
        Fit::GoPartialOffload => 2,
        Fit::Unknown => 1,
        Fit::NoGo => 0,
    }
}

fn fit_word(f: Fit) -> &'static str {
    match f {
        Fit::Go => "go",
        Fit::GoPartialOffload => "go with partial offload",
        Fit::NoGo => "no-go",
        Fit::Unknown => "unknown",
    }
}

/// What a host has taken so far: models placed and their predicted memory.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    models: u32,
    bytes: u64,
}

fn predicted_bytes(v: Option<&FitVerdict>) -> u64 {
    v.map(|v| v.ram_bytes.unwrap_or(0).saturating_add(v.vram_bytes.unwrap_or(0))).unwrap_or(0)
}

/// The least-loaded host among `candidates` (host indices): fewest models, then least predicted
/// memory, then the operator's order.
fn least_loaded(candidates: &[usize], loads: &[Load]) -> Option<usize> {
    candidates.iter().copied().min_by_key(|h| (loads[*h].models, loads[*h].bytes, *h))
}

/// Places every plan model on one of `reports`' hosts (`(host id, report)`, in the operator's
/// order). `reports` must not be empty.
pub fn place(plan: &Plan, reports: &[(String, VerificationReport)]) -> Placement {
    let hosts: Vec<String> = reports.iter().map(|(h, _)| h.clone()).collect();
    let verdict = |h: usize, i: usize| reports[h].1.verdicts.get(i);
    let fit = |h: usize, i: usize| verdict(h, i).map(|v| v.fit).unwrap_or(Fit::Unknown);
    let all: Vec<usize> = (0..hosts.len()).collect();
    let go_hosts = |i: usize| all.iter().copied().filter(|h| fit(*h, i) == Fit::Go).collect::<Vec<_>>();
    // The most constrained models first, so a model that fits on one host only is not crowded
    // out by one that fits anywhere; then plan order.
    let mut order: Vec<usize> = (0..plan.models.len()).collect();
    order.sort_by_key(|i| {
        let n = go_hosts(*i).len();
        (if n == 0 { usize::MAX } else { n }, *i)
    });
    let mut loads = vec![Load::default(); hosts.len()];
    let mut placed: Vec<Option<ModelPlacement>> = vec![None; plan.models.len()];
    for i in order {
        let m = &plan.models[i];
        let verdicts: Vec<HostVerdict> = all
            .iter()
            .map(|h| HostVerdict {
                host: hosts[*h].clone(),
                fit: fit(*h, i),
                reason: verdict(*h, i).map(|v| v.reason.clone()).unwrap_or_else(|| "no verdict from this host".into()),
            })
            .collect();
        let best = all.iter().map(|h| rank(fit(*h, i))).max().unwrap_or(0);
        let candidates: Vec<usize> = all.iter().copied().filter(|h| rank(fit(*h, i)) == best).collect();
        let others = |chosen: usize| {
            verdicts
                .iter()
                .enumerate()
                .filter(|(h, _)| *h != chosen)
                .map(|(_, v)| format!("{}: {} ({})", v.host, fit_word(v.fit), v.reason))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let (host, reason) = if best == 0 {
            // Fits nowhere: the least-loaded host reports it as not run (or runs it anyway
            // when the plan sets `ignore_fit`).
            let h = least_loaded(&all, &loads).unwrap_or(0);
            let why = verdicts.iter().map(|v| format!("{}: {}", v.host, v.reason)).collect::<Vec<_>>().join("; ");
            (h, format!("fits on no host — {why}"))
        } else if best == rank(Fit::GoPartialOffload) {
            // The most layers on the GPU wins; ties go to the least loaded.
            let layers = |h: usize| verdict(h, i).and_then(|v| v.gpu_layers).map(|(on, _)| on).unwrap_or(0);
            let most = candidates.iter().map(|h| layers(*h)).max().unwrap_or(0);
            let tied: Vec<usize> = candidates.iter().copied().filter(|h| layers(*h) == most).collect();
            let h = least_loaded(&tied, &loads).unwrap_or(candidates[0]);
            let split = verdict(h, i)
                .and_then(|v| v.gpu_layers)
                .map(|(on, total)| format!("{on}/{total} layers on the GPU"))
                .unwrap_or_else(|| "a partial offload".into());
            (h, format!("fits fully on no host; the best partial offload is here ({split}); {}", others(h)))
        } else {
            let h = least_loaded(&candidates, &loads).unwrap_or(candidates[0]);
            let word = fit_word(fit(h, i));
            let reason = if candidates.len() == 1 {
                format!("{word} only here; {}", others(h))
            } else {
                let names: Vec<&str> = candidates.iter().map(|c| hosts[*c].as_str()).collect();
                let loaded: Vec<String> = candidates
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {} model(s), {:.1} GiB predicted",
                            hosts[*c],
                            loads[*c].models,
                            loads[*c].bytes as f64 / (1u64 << 30) as f64
                        )
                    })
                    .collect();
                format!("{word} on {}; placed on the least loaded ({})", names.join(", "), loaded.join("; "))
            };
            (h, reason)
        };
        if best > 0 || m.ignore_fit {
            loads[host].models += 1;
            loads[host].bytes = loads[host].bytes.saturating_add(predicted_bytes(verdict(host, i)));
        }
        placed[i] = Some(ModelPlacement {
            index: i as u32,
            model: m.name.clone(),
            host: hosts[host].clone(),
            fit: fit(host, i),
            reason,
            verdicts,
        });
    }
    let (concurrent, concurrent_reason) = place_concurrent(plan, reports, &hosts, &loads);
    Placement { hosts, models: placed.into_iter().flatten().collect(), concurrent, concurrent_reason, round: 0 }
}

/// The host for the concurrent phase: the best together-verdict, then the least loaded.
fn place_concurrent(
    plan: &Plan,
    reports: &[(String, VerificationReport)],
    hosts: &[String],
    loads: &[Load],
) -> (Option<String>, String) {
    let Some(phase) = &plan.concurrent else { return (None, String::new()) };
    let names: Vec<&str> = phase.models.iter().map(|m| m.name.as_str()).collect();
    let fit = |h: usize| reports[h].1.concurrent_fit.as_ref().map(|v| v.fit).unwrap_or(Fit::Unknown);
    let reason = |h: usize| {
        reports[h].1.concurrent_fit.as_ref().map(|v| v.reason.clone()).unwrap_or_else(|| "no prediction".into())
    };
    let all: Vec<usize> = (0..hosts.len()).collect();
    let best = all.iter().map(|h| rank(fit(*h))).max().unwrap_or(0);
    if best == 0 {
        let why = all.iter().map(|h| format!("{}: {}", hosts[*h], reason(*h))).collect::<Vec<_>>().join("; ");
        return (
            None,
            format!("{} do not fit together on any host — {why}; the concurrent phase was not run", names.join(" + ")),
        );
    }
    let candidates: Vec<usize> = all.iter().copied().filter(|h| rank(fit(*h)) == best).collect();
    let h = least_loaded(&candidates, loads).unwrap_or(candidates[0]);
    (Some(hosts[h].clone()), format!("{} together: {} here ({})", names.join(" + "), fit_word(fit(h)), reason(h)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::results::HostFacts;

    fn plan(models: &[&str]) -> Plan {
        let mut text = String::from("name = \"p\"\n");
        for m in models {
            text.push_str(&format!(
                "[[models]]\nname = \"{m}\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"/m.gguf\"\n"
            ));
        }
        text.push_str("[[prompts]]\nid = \"a\"\ntext = \"hi\"\n");
        Plan::from_toml(&text).expect("valid plan")
    }

    fn verdict(model: &str, fit: Fit, why: &str) -> FitVerdict {
        FitVerdict {
            model: model.into(),
            fit,
            source: "test".into(),
            weights_bytes: None,
            kv_bytes: None,
            compute_bytes: None,
            vram_bytes: None,
            ram_bytes: Some(1 << 30),
            gpu_layers: None,
            reason: why.into(),
            suggestion: None,
        }
    }

    fn report(plan: &Plan, host: &str, fits: &[Fit]) -> (String, VerificationReport) {
        let verdicts =
            plan.models.iter().zip(fits).map(|(m, f)| verdict(&m.name, *f, &format!("{host} says"))).collect();
        (
            host.into(),
            VerificationReport {
                plan: plan.clone(),
                plan_hash: "h".into(),
                plan_source: "p.toml".into(),
                host: HostFacts { host_id: host.into(), ..Default::default() },
                checks: Vec::new(),
                verdicts,
                placement: None,
                concurrent_fit: None,
                gate: None,
            },
        )
    }

    fn hosts_of(p: &Placement) -> Vec<&str> {
        p.models.iter().map(|m| m.host.as_str()).collect()
    }

    #[test]
    fn a_model_that_fits_on_one_host_only_goes_there_and_the_rest_balance_around_it() {
        let plan = plan(&["big", "a", "b"]);
        let reports = vec![
            report(&plan, "small", &[Fit::NoGo, Fit::Go, Fit::Go]),
            report(&plan, "large", &[Fit::Go, Fit::Go, Fit::Go]),
        ];
        let p = place(&plan, &reports);
        assert_eq!(p.hosts, ["small", "large"]);
        // `big` is placed first (one candidate), so `a` goes to the empty host; `b` then finds
        // both hosts with one model and as much predicted memory, and goes to the first.
        assert_eq!(hosts_of(&p), ["large", "small", "small"]);
        assert_eq!(p.models[0].fit, Fit::Go);
        assert!(
            p.models[0].reason.contains("only here") && p.models[0].reason.contains("small: no-go"),
            "{:?}",
            p.models[0]
        );
        assert_eq!(p.models[0].verdicts.len(), 2);
    }

    #[test]
    fn models_that_fit_everywhere_are_balanced_by_count() {
        let plan = plan(&["a", "b", "c", "d"]);
        let reports = vec![report(&plan, "h1", &[Fit::Go; 4]), report(&plan, "h2", &[Fit::Go; 4])];
        let p = place(&plan, &reports);
        assert_eq!(hosts_of(&p), ["h1", "h2", "h1", "h2"]);
        assert!(
            p.models[2].reason.contains("least loaded (h1 1 model(s), 1.0 GiB predicted; h2 1 model(s)"),
            "{:?}",
            p.models[2]
        );
    }

    #[test]
    fn a_model_that_fits_nowhere_is_reported_with_every_hosts_reason() {
        let plan = plan(&["huge", "ok"]);
        let reports = vec![report(&plan, "h1", &[Fit::NoGo, Fit::Go]), report(&plan, "h2", &[Fit::NoGo, Fit::Go])];
        let p = place(&plan, &reports);
        assert_eq!(p.models[0].fit, Fit::NoGo);
        assert!(
            p.models[0].reason.starts_with("fits on no host")
                && p.models[0].reason.contains("h1: h1 says")
                && p.models[0].reason.contains("h2: h2 says"),
            "{:?}",
            p.models[0]
        );
        // A model that will not run adds no load: `ok` still goes to the first host.
        assert_eq!(p.models[1].host, "h1");
    }

    #[test]
    fn a_model_that_fits_fully_nowhere_goes_to_the_best_partial_offload() {
        let plan = plan(&["m"]);
        let mut reports = vec![
            report(&plan, "h1", &[Fit::GoPartialOffload]),
            report(&plan, "h2", &[Fit::GoPartialOffload]),
            report(&plan, "h3", &[Fit::NoGo]),
        ];
        reports[0].1.verdicts[0].gpu_layers = Some((10, 40));
        reports[1].1.verdicts[0].gpu_layers = Some((30, 40));
        let p = place(&plan, &reports);
        assert_eq!(p.models[0].host, "h2");
        assert_eq!(p.models[0].fit, Fit::GoPartialOffload);
        assert!(p.models[0].reason.contains("30/40 layers"), "{:?}", p.models[0]);
    }

    #[test]
    fn the_concurrent_phase_goes_where_its_models_fit_together_or_nowhere_with_the_reasons() {
        let mut plan = plan(&["a"]);
        let spec = plan.models[0].clone();
        plan.concurrent =
            Some(protocol::plan::ConcurrentPhase { models: vec![spec], levels: vec![1], baseline: false });
        let mut reports = vec![report(&plan, "h1", &[Fit::Go]), report(&plan, "h2", &[Fit::Go])];
        reports[0].1.concurrent_fit = Some(verdict("concurrent", Fit::NoGo, "needs 9 GiB, 4 GiB free"));
        reports[1].1.concurrent_fit = Some(verdict("concurrent", Fit::Go, "needs 9 GiB, 60 GiB free"));
        let p = place(&plan, &reports);
        assert_eq!(p.concurrent.as_deref(), Some("h2"));
        reports[1].1.concurrent_fit = Some(verdict("concurrent", Fit::NoGo, "needs 9 GiB, 2 GiB free"));
        let p = place(&plan, &reports);
        assert_eq!(p.concurrent, None);
        assert!(
            p.concurrent_reason.contains("4 GiB free") && p.concurrent_reason.contains("2 GiB free"),
            "{}",
            p.concurrent_reason
        );
    }
}
