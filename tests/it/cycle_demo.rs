//! The demo cycle end to end: every prompt measured, the reports on disk.

use super::support::*;
use protocol::results::{CheckStatus, ModelStatus};

#[test]
fn the_demo_plan_runs_end_to_end_with_a_measured_row_for_every_prompt() {
    require_parts();
    let _serial = serial();
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join("docs-out");
    let (o, plan) = up_repo_plan("demo.toml", &out);
    let dir = cycle_dir(&out);
    assert!(String::from_utf8_lossy(&o.stdout).trim_end().ends_with("README.md"), "{}", show(&o));
    let r = results(&dir);
    let model = first_model(&r);
    assert_eq!(model.status, ModelStatus::Measured, "{model:?}");
    for p in &plan.prompts {
        let rows: Vec<_> = model.runs.iter().filter(|x| x.prompt_id == p.id.as_str()).collect();
        assert_eq!(rows.len() as u32, plan.defaults.repetitions, "prompt {}", p.id);
        for x in rows {
            assert!(x.ttft_ms > 0.0, "{x:?}");
            assert!(x.output_tokens > 0, "{x:?}");
            assert!(x.client_decode_tps.is_some_and(|t| t > 0.0), "{x:?}");
            assert!(x.engine_decode_tps.is_some_and(|t| t > 0.0), "engine-reported decode missing: {x:?}");
            assert!(x.analysis.words > 0, "{x:?}");
        }
    }
    let report = std::fs::read_to_string(dir.join("benchmark-report.md")).expect("benchmark report");
    for p in &plan.prompts {
        assert!(report.contains(&p.id), "benchmark-report.md has no row for {}", p.id);
    }
    // The roofline from this host's measured RAM bandwidth: a ceiling and an efficiency, not dashes.
    let host = &r.verification.host;
    let bw = host.ram_bandwidth_gbs.unwrap_or(0.0);
    assert!(bw > 0.1, "the Reader measured no RAM bandwidth: {host:?}");
    let roof = report.split("## Decode roofline").nth(1).expect("a roofline section");
    let row = roof.lines().find(|l| l.starts_with("| gemma3-270m")).expect("a roofline row for the model");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // `threadcycle()` names a missing NVML library: no GPU here even on a machine with one.
    assert_eq!(cells[3], "0 % (no GPU)", "{row}");
    assert!(cells[4].parse::<f64>().is_ok_and(|t| t > 0.0), "no roofline tok/s: {row}");
    assert!(cells[6].ends_with(" %") && cells[6] != "0 %", "no efficiency: {row}");
    // The claims ledger: every claim of the demo plan quoted, with a verdict; the decode claim
    // is measured (whether it holds depends on how loaded the machine is).
    let ledger = std::fs::read_to_string(dir.join("claims.md")).expect("claims ledger");
    let rows: Vec<&str> = ledger.lines().filter(|l| l.starts_with("| “")).collect();
    assert!(!plan.claims.is_empty(), "the demo plan carries claims");
    for i in 0..plan.claims.len() {
        let row = rows.iter().find(|r| r.contains(&format!("(`claims[{i}]`)"))).expect("a ledger row per claim");
        assert!(
            ["| holds |", "| **does not hold** |", "| not measured |"].iter().any(|v| row.ends_with(v)),
            "no verdict: {row}"
        );
    }
    let decode = rows.iter().find(|r| r.contains("decodes at")).expect("the decode claim");
    assert!(decode.contains(" tok/s (client-side)") && !decode.ends_with("| not measured |"), "{decode}");
    assert!(rows.iter().any(|r| r.contains("`models[0].projected.ram_gb`")), "projected figures are claims: {ledger}");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README");
    assert!(readme.contains("## Claims") && readme.contains("(claims.md)"), "{readme}");
    // The demo model is Gemma 3 270M's base model: its GGUF has no chat template, so the plan
    // names Gemma's (the Reader says it is passed to the engine, and the engine ran with it) and
    // marks it a base model, whose answers the quality page does not score.
    let template =
        r.verification.checks.iter().find(|c| c.name == "template.gemma3-270m").expect("a chat template check");
    assert_eq!(template.status, CheckStatus::Pass, "{template:?}");
    assert!(template.measured.contains("`gemma`"), "{template:?}");
    let launch = r.models[0].launch.as_ref().expect("the launch record");
    assert!(launch.args.windows(2).any(|w| w == ["--chat-template", "gemma"]), "{launch:?}");
    let quality = std::fs::read_to_string(dir.join("quality.md")).expect("quality page");
    let rows: Vec<&str> = quality.lines().filter(|l| l.starts_with("| gemma3-270m |")).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.contains("not assessed (base model)")), "{quality}");
    for f in [
        "README.md",
        "claims.md",
        "deployment-guide.md",
        "troubleshooting.md",
        "business-case.md",
        "quality.md",
        "report.html",
        "data/results.csv",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert!(model.peak_ram_bytes.is_some_and(|b| b > 50 << 20), "peak RAM of the engine was not measured: {model:?}");
    assert!(model.manifest.engine_version.as_deref().is_some_and(|v| v.contains("version")), "{model:?}");
    // The deployment guide's command is the Writer's record of the llama-server it ran (whose
    // argv the Writer's unit test holds to /proc), printed byte for byte, alone in its block.
    let launch = model.launch.as_ref().expect("the Writer recorded the launch");
    assert!(launch.args.iter().any(|a| a == "--metrics") && launch.container.is_none(), "{launch:?}");
    let guide = std::fs::read_to_string(dir.join("deployment-guide.md")).expect("guide");
    let fenced = format!("```sh\n{}\n```", launch.command_line());
    assert!(guide.contains(&fenced), "the guide does not print the recorded command {fenced}:\n{guide}");
    // The engine's own memory account, read from llama-server's log (-lv 4), stands beside the
    // Reader's prediction in the report.
    let account = model.engine_memory.as_ref().expect("the Writer read llama-server's memory account");
    assert!(account.weights.iter().any(|d| d.device == "CPU_Mapped"), "{account:?}");
    assert!(
        account.weights_bytes() > 200 << 20 && account.kv_bytes() > 0 && account.compute_bytes() > 0,
        "{account:?}"
    );
    assert_eq!(account.vram_bytes(), 0, "{account:?}");
    let fit = report.split("## Fit prediction against the engine's own account").nth(1).expect("a fit-check section");
    let kv = fit.lines().find(|l| l.starts_with("| gemma3-270m | KV cache |")).expect("a KV row for the model");
    let err: f64 = kv
        .split('|')
        .nth(5)
        .and_then(|c| c.trim().trim_end_matches(" %").replace('−', "-").parse().ok())
        .expect("a KV error");
    assert!(err.abs() <= 10.0, "the KV prediction is off by {err} %: {kv}");
    // The quantisation llama.cpp logged at load, and llama-bench's standard test on the same
    // engine: pp512 over exactly 512 prompt tokens, tg128 over 128 generated ones (ignore_eos),
    // each repetition timed by the engine, in a table like llama-bench's.
    assert_eq!(model.manifest.quantization.as_deref(), Some("Q4_K - Medium"), "{:?}", model.manifest);
    let st = model.standard.as_ref().expect("the standard test ran");
    assert_eq!(st.note, None, "{st:?}");
    let (pp, tg) = (&st.runs[0], &st.runs[1]);
    assert_eq!((pp.test.as_str(), pp.tokens, tg.test.as_str(), tg.tokens), ("pp512", 512, "tg128", 128), "{st:?}");
    let reps = plan.standard.repetitions as usize;
    assert!(pp.tps.len() == reps && tg.tps.len() == reps, "{st:?}");
    assert!(pp.tps.iter().chain(&tg.tps).all(|t| *t > 0.5), "{st:?}");
    // Prefill of a batch outruns token-by-token decode on any CPU.
    assert!(pp.tps.iter().sum::<f64>() > tg.tps.iter().sum::<f64>(), "{st:?}");
    let table = report.split("## Standard test").nth(1).expect("a standard-test section");
    let row = table.lines().find(|l| l.starts_with("| gemma3-270m |") && l.contains("| tg128 |")).expect("a tg128 row");
    assert!(row.contains(" ± ") && row.contains("| Q4\\_K - Medium |") && row.contains("| CPU |"), "{row}");
}
