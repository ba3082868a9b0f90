//! The concurrent phase on real engines: levels 1 and 2 against one model, and two models
//! deployed at once; with `baseline = true` its models also answer the prompts once alone. The
//! Writer killed under `up` during the phase keeps the levels already measured.

use super::background::{Background, signal};
use super::support::*;

/// A plan with one model measured twice per prompt, then levels 1 and 2 against two models and
/// the two together; its models also answer the prompts once alone (`baseline`).
fn concurrent_plan(dir: &std::path::Path) -> std::path::PathBuf {
    let m = model().display().to_string();
    let extra = format!(
        "[concurrent]\nlevels = [1, 2]\nbaseline = true\n\n[[concurrent.models]]\nname = \"gemma-a\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{m}\"\nthreads = 1\nparams_b = 0.27\n\n[[concurrent.models]]\nname = \"gemma-b\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{m}\"\nthreads = 1\nparams_b = 0.27\n\n[[claims]]\ntext = \"improvement over the small model\"\nmetric = \"baseline_improvement\"\nmodel = \"gemma\"\n"
    );
    let plan = write_plan(dir, "concurrent", "", "params_b = 0.27", &extra);
    let text = std::fs::read_to_string(&plan).expect("plan").replace("repetitions = 1", "repetitions = 2");
    std::fs::write(&plan, text).expect("plan");
    plan
}

#[test]
fn the_concurrent_phase_measures_levels_and_models_together() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = concurrent_plan(tmp.path());
    let out = tmp.path().join("out");
    let dir = up_ok(&plan, &out);
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("report");
    assert!(report.contains("## Concurrent phase") && report.contains("gemma-b"), "{report}");
    let r = results(&dir);
    let c = r.concurrent.as_ref().expect("the concurrent phase's results");
    let level = |name: &str, l: u32| {
        c.levels
            .iter()
            .find(|x| x.model == name && x.level == l)
            .unwrap_or_else(|| panic!("no level {l} for {name}: {c:?}"))
    };
    for name in ["gemma-a", "gemma-b"] {
        for l in [1, 2] {
            let row = level(name, l);
            assert_eq!(row.requests, l, "{row:?}");
            assert_eq!(row.failed, 0, "{row:?}");
            assert!(row.mean_e2e_ms > 0.0, "{row:?}");
        }
        let two = level(name, 2);
        assert!(two.degradation.is_some_and(|d| d > 0.0), "{two:?}");
    }
    assert_eq!(c.together.len(), 2, "{c:?}");
    // The baselines answered the prompt once each, alone; the plan's own model twice.
    let reps = |name: &str| -> Vec<u32> {
        let m = r.models.iter().find(|m| m.model == name).unwrap_or_else(|| panic!("no result for {name}"));
        m.runs.iter().map(|x| x.repetition).collect()
    };
    assert_eq!((reps("gemma"), reps("gemma-a"), reps("gemma-b")), (vec![1, 2], vec![1], vec![1]));
    let summary = std::fs::read_to_string(dir.join("README.md")).expect("summary page");
    assert!(summary.contains("also answered every prompt alone"), "{summary}");
    let ledger = std::fs::read_to_string(dir.join("claims.md")).expect("claims ledger");
    assert!(ledger.contains("against gemma-a on the same prompts") && ledger.contains("gemma: "), "{ledger}");
    assert!(c.together.iter().all(|t| t.error.is_none() && t.degradation.is_some()), "{c:?}");
    // The sampler ran through the whole phase, and each engine's GPU memory was read while the
    // two ran together: its pid (NVML lists none here: no GPU), and its own account of its
    // buffers (a CPU build: nothing on a GPU).
    let t = c.telemetry.as_ref().unwrap_or_else(|| panic!("no concurrent telemetry: {c:?}"));
    assert!(t.samples >= 2 && t.duration_s > 0.0, "{t:?}");
    assert!(t.engine_mem_bytes.is_none() && t.host_mem_available_bytes.is_some(), "{t:?}");
    assert_eq!(c.engines.iter().map(|e| e.model.as_str()).collect::<Vec<_>>(), ["gemma-a", "gemma-b"], "{c:?}");
    for e in &c.engines {
        assert!(e.pid.is_some() && e.nvml_bytes.is_none(), "{e:?}");
        assert_eq!(e.engine_reported_bytes, Some(0), "{e:?}");
        assert!(e.engine_source.as_deref().is_some_and(|s| s.contains("llama-server log")), "{e:?}");
    }
    let section = report.split("## Concurrent phase").nth(1).expect("the section");
    assert!(
        section.contains(&format!("Telemetry over the whole concurrent phase ({} samples", t.samples)),
        "{section}"
    );
    assert!(section.contains("- GPU temperature: not sampled (no GPU seen by NVML)"), "{section}");
    assert!(section.contains("| gemma-a | ") && section.contains("GPU buffers in the llama-server log"), "{section}");
}

/// The Writer SIGKILLed under `up` during the concurrent phase, once the first model's levels are
/// in: `up` restarts it, the levels measured before are kept (stored per model), only the rest
/// is measured, and the report has every level once.
#[test]
fn the_writer_killed_during_the_concurrent_phase_keeps_the_levels_already_measured() {
    require_parts();
    let _serial = serial();
    let mut sc = Scenario::new("the_writer_killed_during_the_concurrent_phase_keeps_the_levels_already_measured");
    let tmp = tempfile::tempdir().expect("tmp");
    let plan = concurrent_plan(tmp.path());
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    let mut cmd = threadcycle();
    cmd.arg("up").arg(&plan).arg("--out").arg(&out);
    let mut up = Background::spawn(cmd, &state, &tmp.path().join("up"));
    let line = |name: &str, level: u32| format!("concurrent: {name} with {level} request(s) in flight: ");
    up.wait_until("gemma-b's first level", 600, |b| b.stdout().contains(&line("gemma-b", 1)));
    let writer = agent_child(up.child.id(), "writer").expect("the Writer runs");
    signal(writer, nix::sys::signal::Signal::SIGKILL);
    sc.fault();
    assert_eq!(up.wait(600), Some(0), "{}", up.output());
    let text = up.stdout();
    assert!(up.output().contains("the writer agent crashed (signal: 9 (SIGKILL))"), "{}", up.output());

    let dir = cycle_dir(&out);
    let r = results(&dir);
    sc.note("cycles_completed", 1);
    // The main phase before the kill: the plan's model twice, each baseline once.
    let reps = |name: &str| -> Vec<u32> {
        r.models.iter().filter(|m| m.model == name).flat_map(|m| m.runs.iter().map(|x| x.repetition)).collect()
    };
    assert_eq!((reps("gemma"), reps("gemma-a"), reps("gemma-b")), (vec![1, 2], vec![1], vec![1]));
    let c = r.concurrent.as_ref().expect("the concurrent phase's results");
    let note = c
        .notes
        .iter()
        .find(|n| n.starts_with("the Writer restarted during this phase: the levels of "))
        .unwrap_or_else(|| panic!("no note of the restart: {:?}", c.notes));
    let kept_b = note.contains("gemma-a, gemma-b");
    assert!(note.contains("gemma-a"), "{note}");
    // Every level once in the result (counted before the assertions); measured once each, but
    // gemma-b's again when the kill came before its levels were stored.
    let rows: Vec<(&str, u32, usize)> = ["gemma-a", "gemma-b"]
        .into_iter()
        .flat_map(|name| [1, 2].map(|l| (name, l, c.levels.iter().filter(|x| x.model == name && x.level == l).count())))
        .collect();
    sc.count(ResultCount {
        checked: rows.len() as u64,
        lost: rows.iter().filter(|r| r.2 == 0).count() as u64,
        duplicates: rows.iter().map(|r| r.2.saturating_sub(1) as u64).sum(),
    });
    sc.note("models_kept", if kept_b { 2 } else { 1 });
    assert!(rows.iter().all(|r| r.2 == 1), "{rows:?}: {:?}", c.levels);
    for (name, times) in [("gemma-a", 1), ("gemma-b", if kept_b { 1 } else { 2 })] {
        let measured = text.matches(&line(name, 1)).count();
        assert_eq!(measured, times, "{name} measured {measured} time(s) (note: {note}):\n{text}");
    }
    assert_eq!(c.together.len(), 2, "{c:?}");
}
