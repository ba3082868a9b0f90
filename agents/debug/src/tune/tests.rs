//! The tuning planner's tests: search order, skips, failures, budgets, GPU-layer bisection.

use super::*;
use protocol::plan::TuneSpec;

fn stat(mean: f64, stddev: f64) -> Stat {
    Stat { n: 3, mean, stddev, min: mean - stddev, max: mean + stddev, unstable: false }
}

fn spec(vary: &[TuneKnob], max_trials: u32) -> TuneSpec {
    TuneSpec {
        goal: TuneGoal::DecodeTps,
        vary: vary.to_vec(),
        max_trials,
        max_minutes: 30.0,
        repetitions: 2,
        prompt: None,
        max_tokens: None,
        memory_limit_gb: None,
        vram_headroom_gb: None,
        models: None,
    }
}

const MIB: u64 = 1 << 20;

fn cpu_evidence() -> TuneEvidence {
    TuneEvidence {
        planned: TuneConfig { threads: Some(2), batch: Some(512), ..Default::default() },
        context: 8192,
        cpus: 4,
        gpus: 0,
        weights_bytes: Some(250 * MIB),
        kv_bytes: Some(40 * MIB),
        compute_bytes: Some(30 * MIB),
        measured_ram_bytes: Some(500 * MIB),
        memory_limit_bytes: Some(700 * MIB),
        ..Default::default()
    }
}

fn request(spec: TuneSpec, evidence: TuneEvidence, trials: Vec<Trial>) -> TuneRequest {
    TuneRequest {
        model: "m".into(),
        index: 0,
        round: trials.len() as u32 + 1,
        spec,
        evidence,
        trials,
        elapsed_s: 0.0,
        stop: None,
    }
}

/// Runs the search to its end with `measure` standing in for the Writer.
fn search(
    spec: TuneSpec,
    ev: TuneEvidence,
    measure: impl Fn(&TuneConfig) -> Result<f64, String>,
) -> (Vec<Trial>, Vec<String>, TuneConclusion) {
    let mut trials: Vec<Trial> = Vec::new();
    for _ in 0..50 {
        let p = propose(&request(spec.clone(), ev.clone(), trials.clone()));
        trials.extend(p.skipped);
        if let Some(c) = p.conclusion {
            return (trials, p.notes, c);
        }
        let mut t = p.next.expect("a candidate or a conclusion");
        assert_eq!(t.number as usize, trials.len() + 1, "numbers follow the history");
        match measure(&t.config) {
            Ok(tps) => t.decode_tps = Some(stat(tps, 0.5)),
            Err(e) => {
                t.verdict = TrialVerdict::Failed;
                t.note = e;
            }
        }
        trials.push(t);
    }
    panic!("the search did not end: {trials:?}");
}

#[test]
fn the_first_proposal_is_the_baseline() {
    let p = propose(&request(spec(&TuneKnob::ORDER, 8), cpu_evidence(), Vec::new()));
    let t = p.next.expect("baseline");
    assert_eq!((t.stage.as_str(), t.number), ("baseline", 1));
    assert_eq!(t.config, cpu_evidence().planned);
    assert_eq!(t.predicted_ram_bytes, Some(500 * MIB), "the measured baseline");
}

#[test]
fn a_cpu_search_goes_threads_then_batch_then_kv_and_skips_what_cannot_fit() {
    // Faster with 4 threads and with q8_0; batch does not matter.
    let speed = |c: &TuneConfig| {
        let mut v = 10.0;
        if c.threads == Some(4) {
            v += 3.0;
        }
        if c.kv_type == Some(KvCacheType::Q8_0) {
            v += 2.0;
        }
        Ok(v)
    };
    let (trials, notes, c) = search(spec(&TuneKnob::ORDER, 10), cpu_evidence(), speed);
    let row = |t: &Trial| (t.stage.clone(), t.config.threads, t.config.batch, t.config.kv_type, t.verdict);
    let rows: Vec<_> = trials.iter().map(row).collect();
    use TrialVerdict::*;
    assert_eq!(
        rows,
        vec![
            ("baseline".into(), Some(2), Some(512), None, Measured),
            // Physical cores = planned 2: not repeated; every logical CPU is.
            ("threads".into(), Some(4), Some(512), None, Measured),
            ("batch".into(), Some(4), Some(256), None, Measured),
            ("batch".into(), Some(4), Some(2048), None, Measured),
            // batch 8192: compute 30 MiB × 16 → +450 MiB over the 500 measured: above 700 MiB.
            ("batch".into(), Some(4), Some(8192), None, Skipped),
            ("kv_type".into(), Some(4), Some(512), Some(KvCacheType::Q8_0), Measured),
        ]
    );
    assert!(trials[4].note.contains("above the limit of 0.68 GiB"), "{}", trials[4].note);
    assert_eq!(trials[4].predicted_ram_bytes, Some(950 * MIB));
    assert!(notes.iter().any(|n| n == "GPU layers not searched: the host has no GPU"), "{notes:?}");
    assert_eq!(c.winner, Some(6));
    assert_eq!(c.baseline, Some(1));
    assert!((c.gain_pct.expect("gain") - 50.0).abs() < 1e-9);
    assert!(c.outcome.starts_with("search complete"), "{}", c.outcome);
    assert!(c.outcome.contains("Winner: trial 6"), "{}", c.outcome);
}

#[test]
fn a_failed_candidate_is_recorded_and_the_search_goes_on_from_the_best() {
    let speed = |c: &TuneConfig| {
        if c.batch == Some(2048) {
            Err("the engine died (signal 9)".into())
        } else {
            Ok(10.0 + f64::from(c.threads.unwrap_or(0)))
        }
    };
    let (trials, _, c) = search(spec(&[TuneKnob::Threads, TuneKnob::Batch], 10), cpu_evidence(), speed);
    let failed: Vec<_> = trials.iter().filter(|t| t.verdict == TrialVerdict::Failed).collect();
    assert_eq!(failed.len(), 1);
    let after = trials.iter().find(|t| t.number == failed[0].number + 1).expect("the search went on");
    assert_eq!(after.config.threads, Some(4), "from the best so far, not from the failed one");
    assert_eq!(c.winner, Some(2), "threads 4 wins");
}

#[test]
fn nothing_beyond_noise_keeps_the_baseline_and_says_so() {
    let speed = |c: &TuneConfig| Ok(if c.threads == Some(4) { 10.3 } else { 10.0 });
    let (_, _, c) = search(spec(&[TuneKnob::Threads], 10), cpu_evidence(), speed);
    assert_eq!(c.winner, Some(1));
    assert!(c.outcome.contains("Baseline kept"), "{}", c.outcome);
    assert!(c.outcome.contains("within the noise"), "{}", c.outcome);
}

#[test]
fn the_trial_budget_ends_the_search() {
    let (trials, _, c) = search(spec(&TuneKnob::ORDER, 2), cpu_evidence(), |_| Ok(10.0));
    assert_eq!(trials.iter().filter(|t| t.verdict != TrialVerdict::Skipped).count(), 2);
    assert!(c.outcome.starts_with("trial budget used: 2 of 2"), "{}", c.outcome);
    let mut late = request(spec(&TuneKnob::ORDER, 8), cpu_evidence(), trials);
    late.elapsed_s = 31.0 * 60.0;
    let p = propose(&late);
    assert!(p.conclusion.expect("done").outcome.starts_with("time budget used"));
}

#[test]
fn gpu_layers_are_bisected_to_the_largest_that_runs() {
    let ev = TuneEvidence {
        planned: TuneConfig { gpu_layers: Some(10), ..Default::default() },
        context: 4096,
        cpus: 8,
        gpus: 1,
        layers_total: Some(40),
        predicted_gpu_layers: Some(32),
        weights_bytes: Some(40 << 30),
        kv_bytes: Some(0),
        compute_bytes: Some(0),
        vram_free_bytes: Some(30 << 30),
        ..Default::default()
    };
    // Really, 27 layers run and 28 do not.
    let speed = |c: &TuneConfig| match c.gpu_layers {
        Some(n) if n > 27 => Err("CUDA error: out of memory".to_string()),
        Some(n) => Ok(f64::from(n)),
        None => Ok(0.0),
    };
    let (trials, _, c) = search(spec(&[TuneKnob::GpuLayers], 20), ev.clone(), speed);
    let layers: Vec<(Option<i32>, TrialVerdict)> = trials.iter().map(|t| (t.config.gpu_layers, t.verdict)).collect();
    use TrialVerdict::*;
    // 32 would need 32 GiB: predicted not to fit in 30 GiB free, so skipped; then bisection
    // between 10 (ran) and 32: 21, 26, 29 (out of memory), 27, 28 (out of memory).
    assert_eq!(
        layers,
        vec![
            (Some(10), Measured),
            (Some(32), Skipped),
            (Some(21), Measured),
            (Some(26), Measured),
            (Some(29), Failed),
            (Some(27), Measured),
            (Some(28), Failed),
        ]
    );
    let winner = trials.iter().find(|t| Some(t.number) == c.winner).expect("winner");
    assert_eq!(winner.config.gpu_layers, Some(27));
    // With headroom asked for, fewer layers are predicted to fit.
    let mut s = spec(&[TuneKnob::GpuLayers], 20);
    s.vram_headroom_gb = Some(8.0);
    let first = vec![Trial {
        decode_tps: Some(stat(10.0, 0.1)),
        ..propose(&request(s.clone(), ev.clone(), Vec::new())).next.expect("baseline")
    }];
    let p = propose(&request(s, ev, first));
    assert!(p.skipped[0].note.contains("8.00 GiB must stay free"), "{:?}", p.skipped);
}

#[test]
fn ttft_is_lower_is_better() {
    let mut a = candidate(1, TuneKnob::Threads, String::new(), TuneConfig::default());
    a.stage = "baseline".into();
    a.ttft_ms = Some(stat(200.0, 1.0));
    let mut b = candidate(2, TuneKnob::Threads, String::new(), TuneConfig { threads: Some(1), ..Default::default() });
    b.ttft_ms = Some(stat(100.0, 1.0));
    let c = conclude(TuneGoal::Ttft, &[a, b], "search complete".into());
    assert_eq!(c.winner, Some(2));
    assert!((c.gain_pct.expect("gain") - 50.0).abs() < 1e-9);
}

#[test]
fn the_operators_stop_concludes_from_the_trials_so_far() {
    let sp = spec(&TuneKnob::ORDER, 8);
    // Before any trial: nothing to conclude from, no candidate proposed.
    let mut req = request(sp.clone(), cpu_evidence(), Vec::new());
    req.stop = Some("stopped by the operator".into());
    let p = propose(&req);
    assert!(p.next.is_none(), "{p:?}");
    let c = p.conclusion.expect("a conclusion");
    assert_eq!((c.winner, c.baseline), (None, None), "{c:?}");
    assert!(c.outcome.starts_with("stopped by the operator"), "{}", c.outcome);
    // After a baseline and a faster candidate: the candidate wins, nothing more is proposed.
    let first = propose(&request(sp.clone(), cpu_evidence(), Vec::new())).next.expect("baseline");
    let mut trials = vec![Trial { decode_tps: Some(stat(50.0, 0.5)), ..first }];
    let mut second = propose(&request(sp.clone(), cpu_evidence(), trials.clone())).next.expect("a candidate");
    second.decode_tps = Some(stat(60.0, 0.5));
    trials.push(second);
    let mut req = request(sp, cpu_evidence(), trials);
    req.stop = Some("stopped by the operator after 2 trial(s) measured".into());
    let p = propose(&req);
    assert!(p.next.is_none() && p.skipped.is_empty(), "{p:?}");
    let c = p.conclusion.expect("a conclusion");
    assert_eq!((c.winner, c.baseline), (Some(2), Some(1)), "{c:?}");
    assert!(
        c.outcome.starts_with("stopped by the operator after 2 trial(s) measured. Winner: trial 2"),
        "{}",
        c.outcome
    );
}
