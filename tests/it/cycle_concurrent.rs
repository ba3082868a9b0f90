//! The concurrent phase on real engines: levels 1 and 2 against one model, and two models
//! deployed at once; with `baseline = true` its models also answer the prompts once alone.

use super::support::*;

#[test]
fn the_concurrent_phase_measures_levels_and_models_together() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let m = model().display().to_string();
    let extra = format!(
        "[concurrent]\nlevels = [1, 2]\nbaseline = true\n\n[[concurrent.models]]\nname = \"gemma-a\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{m}\"\nthreads = 1\nparams_b = 0.27\n\n[[concurrent.models]]\nname = \"gemma-b\"\nengine = \"llama-server\"\nruntime = \"process\"\nmodel_path = \"{m}\"\nthreads = 1\nparams_b = 0.27\n\n[[claims]]\ntext = \"improvement over the small model\"\nmetric = \"baseline_improvement\"\nmodel = \"gemma\"\n"
    );
    let plan = write_plan(tmp.path(), "concurrent", "", "params_b = 0.27", &extra);
    let text = std::fs::read_to_string(&plan).expect("plan").replace("repetitions = 1", "repetitions = 2");
    std::fs::write(&plan, text).expect("plan");
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
